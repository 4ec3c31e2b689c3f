"""Tokens expiring on open connections, and ``refresh`` (PROTOCOL §1, §2)."""

from __future__ import annotations

import asyncio
import time

from tests.harness import Recorder, RunningServer
from tests.integration.auth_support import (
    USER_MSG,
    closed_with,
    mint,
    next_json,
    no_secrets_in_logs,
    raw_ws,
)

__all__ = ["no_secrets_in_logs"]

SHORT_TTL = 2  # seconds; the server's leeway (5 s) only applies to checks at connect


async def connect(server: RunningServer, token: str) -> Recorder:
    rec = Recorder()
    await rec.connect(server.url, token)
    await rec.wait_event("session")
    return rec


async def test_connection_is_closed_with_token_expired(server: RunningServer) -> None:
    rec = await connect(server, mint("alice", ttl=SHORT_TTL))
    try:
        error = await rec.wait_event("error", timeout=SHORT_TTL + 10)
        assert error["code"] == "token_expired"
        assert error["retryable"] is False
        await rec.wait_event("disconnect", timeout=10)
        assert not rec.client.connected
    finally:
        await rec.close()


async def test_refresh_with_a_valid_token_keeps_the_connection(server: RunningServer) -> None:
    rec = await connect(server, mint("alice", ttl=SHORT_TTL))
    try:
        fresh = mint("alice", ttl=3600)
        ack = await rec.call("refresh", {"token": fresh})
        assert ack["ok"] is True
        assert abs(ack["expires_at"] - (time.time() + 3600)) < 30
        await asyncio.sleep(SHORT_TTL + 1.5)
        assert rec.client.connected
        assert not [e for e, d in rec.events if e in ("error", "disconnect")], rec.events
        # and it still works
        ack = await rec.call("chat", {"request_id": "r1", "messages": USER_MSG})
        assert ack == {"ok": True, "request_id": "r1"}
        assert (await rec.terminal("r1"))[0] == "done"
    finally:
        await rec.close()


async def test_refresh_for_another_user_is_forbidden(server: RunningServer) -> None:
    rec = await connect(server, mint("alice", ttl=SHORT_TTL + 1))
    try:
        ack = await rec.call("refresh", {"token": mint("mallory", ttl=3600)})
        assert ack["ok"] is False
        assert ack["error"]["code"] == "forbidden"
        # the identity did not change: the connection still ends at alice's exp
        error = await rec.wait_event("error", timeout=SHORT_TTL + 10)
        assert error["code"] == "token_expired"
        await rec.wait_event("disconnect", timeout=10)
    finally:
        await rec.close()


async def test_refresh_with_bad_tokens_is_refused(server: RunningServer) -> None:
    rec = await connect(server, mint("alice"))
    try:
        for token, code in [
            (mint("alice", ttl=-60), "token_expired"),
            ("garbage", "unauthorized"),
            (mint("alice", secret="x" * 40), "unauthorized"),
        ]:
            ack = await rec.call("refresh", {"token": token})
            assert ack == {"ok": False, "error": ack["error"]}
            assert ack["error"]["code"] == code
            assert token not in str(ack)
        ack = await rec.call("refresh", {"token": 42})
        assert ack["error"]["code"] == "invalid_payload"
        assert rec.client.connected
    finally:
        await rec.close()


async def test_raw_connection_closes_at_expiry(server: RunningServer) -> None:
    async with raw_ws(server.url, token=mint("alice", ttl=SHORT_TTL)) as ws:
        frame = await next_json(ws, timeout=SHORT_TTL + 10)
        assert frame["type"] == "error"
        assert frame["code"] == "token_expired"
        assert await closed_with(ws) == 4401


async def test_raw_refresh_keeps_the_connection(server: RunningServer) -> None:
    async with raw_ws(server.url, token=mint("alice", ttl=SHORT_TTL)) as ws:
        await ws.send_json({"type": "refresh", "token": mint("alice", ttl=3600)})
        frame = await next_json(ws)
        assert frame["type"] == "refreshed"
        await ws.send_json({"type": "refresh", "token": mint("bob", ttl=3600)})
        frame = await next_json(ws)
        assert (frame["type"], frame["code"]) == ("error", "forbidden")
        await asyncio.sleep(SHORT_TTL + 1.5)
        await ws.send_json({"messages": USER_MSG, "model": "double/normal"})
        while (frame := await next_json(ws))["type"] == "token":
            pass
        assert frame["type"] == "done"
