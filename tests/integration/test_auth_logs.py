"""Secrets stay out of logs and client-facing errors (issue 3, point 6).

Every auth test module also checks its own captured logs (``no_secrets_in_logs``);
this one runs ``python -m server`` as deployed — its own logging set-up, uvicorn's
access log on, LOG_LEVEL=debug — through every path that carries a secret.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from auth.users import UserStore
from tests.harness import API_KEY, JWT_SECRET, Recorder, spawn_server
from tests.integration.auth_support import (
    TOKENS_SEEN,
    USER_MSG,
    mint,
    next_json,
    no_secrets_in_logs,
    raw_ws,
    refused,
    remember,
)
from tests.upstream_double import UpstreamDouble

__all__ = ["no_secrets_in_logs"]

PASSWORD = "a password nobody may see"


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_deployed_server_logs_no_secrets(
    upstream: UpstreamDouble, tmp_path: Path, log_format: str
) -> None:
    upstream.require_api_key = API_KEY
    users = tmp_path / "users.toml"
    UserStore(users).add("alice", PASSWORD)
    server = await spawn_server(
        {
            "JWT_SECRET": JWT_SECRET,
            "OPENROUTER_API_KEY": API_KEY,
            "OPENROUTER_BASE_URL": upstream.base_url,
            "USERS_FILE": str(users),
            "LOG_LEVEL": "debug",
            "LOG_FORMAT": log_format,
        }
    )
    seen_by_clients: list[Any] = []
    try:
        async with aiohttp.ClientSession() as http:
            form = {"username": "alice", "password": PASSWORD}
            async with http.post(f"{server.url}/auth/token", data=form) as resp:
                assert resp.status == 200
                token = remember((await resp.json())["access_token"])
            form = {"username": "alice", "password": PASSWORD + "!"}
            async with http.post(f"{server.url}/auth/token", data=form) as resp:
                seen_by_clients.append(await resp.text())
            async with http.get(f"{server.url}/health?token={token}") as resp:
                assert resp.status == 200
            headers = {"Authorization": f"Bearer {token}", "Cookie": f"session={token}"}
            async with http.get(f"{server.url}/health", headers=headers) as resp:
                assert resp.status == 200

        # Socket.IO: auth payload, Authorization header, refresh, a failing upstream
        rec = Recorder()
        try:
            await rec.connect(server.url, token)
            seen_by_clients.append(await rec.wait_event("session"))
            seen_by_clients.append(await rec.call("refresh", {"token": mint("alice")}))
            seen_by_clients.append(await rec.call("refresh", {"token": mint("bob")}))
            for rid, model in (("ok", "double/normal"), ("bad", "double/http_401")):
                ack = await rec.call(
                    "chat", {"request_id": rid, "messages": USER_MSG, "model": model}
                )
                seen_by_clients.append(ack)
                seen_by_clients.append(await rec.terminal(rid))
        finally:
            await rec.close()
        rec = Recorder()
        try:
            await rec.connect(server.url, headers={"Authorization": f"Bearer {mint('carol')}"})
            await rec.wait_event("session")
        finally:
            await rec.close()
        seen_by_clients.append(await refused(server.url, mint("dave", ttl=-60)))
        seen_by_clients.append(await refused(server.url, mint("erin", secret="z" * 40)))

        # raw WebSocket: the token in the query string (what browsers do) and in a header
        async with raw_ws(server.url, query=f"?token={mint('frank')}&format=completion") as ws:
            await ws.send_json({"messages": USER_MSG, "model": "double/http_401"})
            while (frame := await next_json(ws))["type"] == "completion":
                pass
            seen_by_clients.append(frame)
        async with raw_ws(server.url, query=f"?token={mint('gina', ttl=-60)}") as ws:
            seen_by_clients.append(await next_json(ws))
    finally:
        await server.stop()  # uvicorn re-raises SIGTERM after a clean shutdown

    logs = "".join(server.output)
    # the secret-bearing requests were logged, redacted
    assert "/websockets/openrouter?token=[REDACTED]&format=completion" in logs
    assert "/health?token=[REDACTED]" in logs
    # refusals are logged with the peer address and the reason, never the token
    assert "refused a socketio connection from 127.0.0.1: token_expired" in logs
    assert "refused a websocket connection from 127.0.0.1: token_expired" in logs
    # Socket.IO CONNECT frames, in websockets' debug log (quotes escaped in JSON lines)
    assert re.search(r'token\\?":\\?"\[REDACTED\]', logs)
    if log_format == "json":
        assert all(json.loads(line) for line in logs.splitlines() if line.startswith("{"))
    for where, text in (("logs", logs), ("client messages", json.dumps(seen_by_clients))):
        assert API_KEY not in text, where
        assert JWT_SECRET not in text, where
        assert PASSWORD not in text, where
        assert not [t for t in TOKENS_SEEN if t in text], where
    # the upstream refused our key: clients learn that, not the key
    assert any(
        isinstance(item, (list, tuple)) and item[1].get("code") == "upstream_auth"
        for item in seen_by_clients
    )
