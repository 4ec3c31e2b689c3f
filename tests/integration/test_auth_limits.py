"""Limits that protect the service: rate, streams, connections, sizes (PROTOCOL §4, §5)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from tests.harness import Recorder, RunningServer, run_server
from tests.integration.auth_support import (
    USER_MSG,
    closed_with,
    mint,
    next_json,
    no_secrets_in_logs,
    polling_connect,
    raw_ws,
    refused,
)

__all__ = ["no_secrets_in_logs"]

SLOW = "double/slow"  # 50 tokens, 0.2 s apart: stays in flight long enough


@pytest.fixture
async def recs() -> AsyncIterator[Callable[..., Any]]:
    made: list[Recorder] = []

    async def connect(server: RunningServer, sub: str = "alice") -> Recorder:
        rec = Recorder()
        made.append(rec)
        await rec.connect(server.url, mint(sub))
        await rec.wait_event("session")
        return rec

    yield connect
    for rec in made:
        await rec.close()


def chat(request_id: str, model: str = "double/normal", **extra: Any) -> dict[str, Any]:
    return {"request_id": request_id, "messages": USER_MSG, "model": model, **extra}


async def refused_chat(rec: Recorder, payload: dict[str, Any], code: str) -> dict[str, Any]:
    ack = await rec.call("chat", payload)
    assert ack["ok"] is False, ack
    assert ack["error"]["code"] == code, ack
    event = await rec.wait_for(
        lambda e, d: e == "error" and d.get("request_id") == payload.get("request_id")
    )
    assert event[1]["code"] == code
    return dict(ack["error"])


async def raw_chat(ws: aiohttp.ClientWebSocketResponse, **payload: Any) -> dict[str, Any]:
    """Send a chat frame; return the terminal (or refusal) frame."""
    await ws.send_json({"messages": USER_MSG, "model": "double/normal", **payload})
    while (frame := await next_json(ws))["type"] == "token":
        pass
    return dict(frame)


# -- rate ---------------------------------------------------------------------------------


async def test_rate_limit_counts_accepted_chats_on_both_transports(
    settings_for: Callable[..., Any], recs: Callable[..., Any]
) -> None:
    async with run_server(settings_for(rate_limit_per_minute=3)) as server:
        rec = await recs(server)
        for rid in ("r1", "r2"):
            assert (await rec.call("chat", chat(rid)))["ok"] is True
            await rec.terminal(rid)
        async with raw_ws(server.url, token=mint("alice")) as ws:
            assert (await raw_chat(ws))["type"] == "done"
            frame = await raw_chat(ws)
            assert (frame["type"], frame["code"]) == ("error", "rate_limited")
        error = await refused_chat(rec, chat("r4"), "rate_limited")
        assert error["retryable"] is True
        assert 0 < error["retry_after"] <= 60
        # refused requests are not counted, other users are not affected,
        # and the connection stays usable
        other = await recs(server, "bob")
        assert (await other.call("chat", chat("b1")))["ok"] is True
        assert (await rec.call("cancel", {"request_id": "r1"}))["error"]["code"] == "not_found"


# -- streams ------------------------------------------------------------------------------


async def test_concurrent_streams_per_user(
    settings_for: Callable[..., Any], recs: Callable[..., Any]
) -> None:
    async with run_server(settings_for(max_streams_per_user=2)) as server:
        first, second, third = [await recs(server) for _ in range(3)]
        assert (await first.call("chat", chat("s1", SLOW)))["ok"] is True
        assert (await second.call("chat", chat("s2", SLOW)))["ok"] is True
        error = await refused_chat(third, chat("s3", SLOW), "too_many_streams")
        assert error["retryable"] is True
        bob = await recs(server, "bob")
        assert (await bob.call("chat", chat("b1", SLOW)))["ok"] is True
        # a stream that ends gives its place back
        assert (await first.call("cancel", {"request_id": "s1"}))["ok"] is True
        assert (await first.terminal("s1"))[1]["finish_reason"] == "cancelled"
        assert (await third.call("chat", chat("s4")))["ok"] is True
        assert (await third.terminal("s4"))[0] == "done"


async def test_concurrent_streams_per_connection_even_when_sent_at_once(
    settings_for: Callable[..., Any], recs: Callable[..., Any]
) -> None:
    async with run_server(settings_for(max_streams_per_connection=2)) as server:
        rec = await recs(server)
        acks = await asyncio.gather(*(rec.call("chat", chat(f"c{i}", SLOW)) for i in range(5)))
        assert sum(1 for ack in acks if ack["ok"]) == 2
        assert {ack["error"]["code"] for ack in acks if not ack["ok"]} == {"too_many_streams"}


# -- connections ---------------------------------------------------------------------------


async def test_connections_per_user(
    settings_for: Callable[..., Any], recs: Callable[..., Any]
) -> None:
    async with run_server(settings_for(max_connections_per_user=2)) as server:
        first = await recs(server)
        async with raw_ws(server.url, token=mint("alice")) as ws:
            error = await refused(server.url, mint("alice"))
            assert error["data"]["code"] == "rate_limited"
            async with raw_ws(server.url, token=mint("alice")) as extra:
                frame = await next_json(extra)
                assert (frame["type"], frame["code"]) == ("error", "rate_limited")
                assert await closed_with(extra) == 4429
            await recs(server, "bob")  # other users are not affected
            await ws.close()
        await first.close()
        # closed connections give their places back (on_disconnect runs shortly after)
        deadline = time.monotonic() + 10
        while True:
            try:
                await recs(server)
                await recs(server)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


# -- sizes -------------------------------------------------------------------------------


async def test_payload_too_large_keeps_the_connection(
    settings_for: Callable[..., Any], recs: Callable[..., Any]
) -> None:
    settings = settings_for(max_payload_bytes=2000, max_messages=3, max_message_chars=500)
    async with run_server(settings) as server:
        rec = await recs(server)
        big = [{"role": "user", "content": "x" * 3000}]
        await refused_chat(rec, {"request_id": "big", "messages": big}, "payload_too_large")
        many = [{"role": "user", "content": "hi"}] * 4
        await refused_chat(rec, {"request_id": "many", "messages": many}, "payload_too_large")
        long = [{"role": "user", "content": "y" * 600}]
        await refused_chat(rec, {"request_id": "long", "messages": long}, "payload_too_large")
        assert (await rec.call("chat", chat("ok")))["ok"] is True
        assert (await rec.terminal("ok"))[0] == "done"

        async with raw_ws(server.url, token=mint("alice")) as ws:
            frame = await raw_chat(ws, messages=big)
            assert (frame["type"], frame["code"]) == ("error", "payload_too_large")
            assert (await raw_chat(ws))["type"] == "done"


async def test_frame_over_the_cap_closes_the_raw_connection_with_1009(
    settings_for: Callable[..., Any],
) -> None:
    settings = settings_for(max_frame_bytes=65_536, max_payload_bytes=4_000)
    async with run_server(settings) as server, raw_ws(server.url, token=mint("alice")) as ws:
        # over the payload limit but under the frame cap: refused, connection kept
        frame = await raw_chat(ws, messages=[{"role": "user", "content": "x" * 10_000}])
        assert frame["code"] == "payload_too_large"
        await ws.send_str("x" * 100_000)
        assert await closed_with(ws) == 1009


async def test_message_over_the_cap_closes_only_that_socketio_connection(
    settings_for: Callable[..., Any], recs: Callable[..., Any]
) -> None:
    settings = settings_for(max_frame_bytes=65_536, max_payload_bytes=4_000)
    async with run_server(settings) as server:
        bystander = await recs(server, "bob")
        offender = await recs(server)
        huge = {"request_id": "huge", "messages": [{"role": "user", "content": "x" * 100_000}]}
        await offender.client.emit("chat", huge)
        await offender.wait_event("disconnect", timeout=10)
        assert not offender.client.connected
        assert (await bystander.call("chat", chat("b1")))["ok"] is True
        assert (await bystander.terminal("b1"))[0] == "done"


async def test_polling_post_over_the_cap_ends_that_session(
    settings_for: Callable[..., Any],
) -> None:
    settings = settings_for(max_frame_bytes=65_536)
    async with run_server(settings) as server, aiohttp.ClientSession() as http:
        sid_url = await polling_connect(http, server.url, mint("alice"), {})
        assert sid_url is not None

        async def long_poll() -> str:  # as a real client keeps one GET waiting
            async with http.get(sid_url) as resp:
                return await resp.text()

        waiting = asyncio.create_task(long_poll())
        await asyncio.sleep(0.2)
        async with http.post(sid_url, data="4" + "x" * 100_000) as resp:
            assert resp.status == 400
        assert "1" in (await asyncio.wait_for(waiting, 10)).split("\x1e")  # CLOSE
        async with http.get(sid_url) as resp:
            assert resp.status == 400  # the session is gone
        other = await polling_connect(http, server.url, mint("bob"), {})
        assert other is not None
        async with http.post(other, data="1") as resp:
            assert resp.status == 200
