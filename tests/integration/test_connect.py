"""JWT at connect (the relay core's minimal part) and the health routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import socketio

from tests.harness import Recorder, RunningServer, make_token, run_server


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (None, "unauthorized"),
        ("garbage", "unauthorized"),
        (make_token("alice", secret="another-secret-another-secret-xx"), "unauthorized"),
        (make_token("alice", ttl=-120), "token_expired"),
    ],
    ids=["none", "garbage", "bad-signature", "expired"],
)
async def test_bad_tokens_refuse_the_connection(
    server: RunningServer, recorders: Callable[[], Recorder], token: str | None, code: str
) -> None:
    rec = recorders()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await rec.connect(server.url, token)
    error = rec.connect_error
    assert error["message"] == "unauthorized"
    assert error["data"]["code"] == code
    assert error["data"]["message"]


async def test_bearer_header_is_accepted(
    server: RunningServer, recorders: Callable[[], Recorder]
) -> None:
    rec = recorders()
    await rec.connect(server.url, headers={"Authorization": f"Bearer {make_token('bob')}"})
    session = await rec.wait_event("session")
    assert session["user"]["id"] == "bob"


async def test_anonymous_mode_lets_guests_in(
    settings_for: Callable[..., Any], recorders: Callable[[], Recorder]
) -> None:
    async with run_server(settings_for(allow_anonymous=True)) as srv:
        first, second = recorders(), recorders()
        await first.connect(srv.url)
        await second.connect(srv.url)
        one = (await first.wait_event("session"))["user"]
        two = (await second.wait_event("session"))["user"]
        assert one["id"].startswith("guest:")
        assert one["id"] != two["id"]
        async with aiohttp.ClientSession() as http, http.post(f"{srv.url}/auth/guest") as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["token_type"] == "bearer"
        again = recorders()
        await again.connect(srv.url, body["access_token"])
        guest = (await again.wait_event("session"))["user"]
        assert guest["id"].startswith("guest:")
        assert guest["name"].startswith("Guest")
        await first.close()
        await second.close()
        await again.close()


async def test_guest_route_is_404_without_anonymous_mode(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{server.url}/auth/guest") as resp:
        assert resp.status == 404


async def test_health_and_readiness(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/health") as resp:
            assert resp.status == 200
            body = await resp.json()
            assert body["status"] == "ok"
            assert body["version"]
            assert body["uptime_s"] >= 0
        async with http.get(f"{server.url}/health/ready") as resp:
            assert resp.status == 200
            ready = await resp.json()
            assert ready["checks"]["upstream"] == "ok"
            assert ready["checks"]["redis"] == "disabled"


async def test_readiness_is_503_without_an_api_key(
    settings_for: Callable[..., Any], recorders: Callable[[], Recorder]
) -> None:
    async with run_server(settings_for(openrouter_api_key=None)) as srv:
        async with aiohttp.ClientSession() as http, http.get(f"{srv.url}/health/ready") as resp:
            assert resp.status == 503
            body = await resp.json()
            assert body["checks"]["upstream"] == "missing_api_key"
        rec = recorders()
        await rec.connect(srv.url, make_token("alice"))
        await rec.call("chat", {"request_id": "k", "messages": [{"role": "user", "content": "x"}]})
        event, error = await rec.terminal("k")
        assert (event, error["code"], error["retryable"]) == ("error", "upstream_auth", False)
        await rec.close()
