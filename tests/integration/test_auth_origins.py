"""Browser origins: cross-site WebSocket hijacking is refused (PROTOCOL §1 Origins, §2)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from tests.harness import Recorder, RunningServer, run_server
from tests.integration.auth_support import (
    closed_with,
    mint,
    next_json,
    no_secrets_in_logs,
    polling_connect,
    raw_ws,
)

__all__ = ["no_secrets_in_logs"]

LISTED = "https://app.example.com"
EVIL = "https://evil.example.net"
TRANSPORTS = [["websocket"], ["polling"]]


@pytest.fixture
async def listed_server(settings_for: Callable[..., Any]) -> AsyncIterator[RunningServer]:
    async with run_server(settings_for(cors_origins=f"{LISTED},https://other.example")) as s:
        yield s


async def opens(url: str, origin: str | None, transports: list[str]) -> bool:
    """Whether a Socket.IO client sending this ``Origin`` gets a session."""
    if transports == ["polling"]:
        return await polling_opens(url, origin)
    rec = Recorder()
    headers = {"Origin": origin} if origin else {}
    try:
        await rec.connect(url, mint("alice"), headers=headers, transports=transports)
        await rec.wait_event("session")
        return True
    except Exception:
        return False
    finally:
        await rec.close()
        http = rec.client.eio.http  # a refused handshake leaves the client's session open
        if http is not None and not http.closed:
            await http.close()


async def polling_opens(url: str, origin: str | None) -> bool:
    headers = {"Origin": origin} if origin else {}
    async with aiohttp.ClientSession() as http:
        sid_url = await polling_connect(http, url, mint("alice"), headers)
        if sid_url is None:
            return False
        async with http.post(sid_url, data="1", headers=headers) as resp:  # close
            assert resp.status == 200
        return True


async def raw_verdict(url: str, origin: str | None) -> tuple[str, Any]:
    headers = {"Origin": origin} if origin else {}
    async with raw_ws(url, token=mint("alice"), headers=headers) as ws:
        await ws.send_json({"type": "cancel", "request_id": "nothing"})
        frame = await next_json(ws)
        if frame.get("code") == "forbidden":
            return "refused", await closed_with(ws)
        assert frame["code"] == "not_found"  # the connection was open and answered
        return "open", None


@pytest.mark.parametrize("transports", TRANSPORTS, ids=["websocket", "polling"])
async def test_default_is_same_origin_only(server: RunningServer, transports: list[str]) -> None:
    assert not await opens(server.url, EVIL, transports)
    assert not await opens(server.url, "null", transports)
    assert not await opens(server.url, f"http://127.0.0.1:{server.port + 1}", transports)
    assert await opens(server.url, f"http://127.0.0.1:{server.port}", transports)
    assert await opens(server.url, None, transports)  # not a browser: the token decides


@pytest.mark.parametrize("transports", TRANSPORTS, ids=["websocket", "polling"])
async def test_listed_origins_may_connect(
    listed_server: RunningServer, transports: list[str]
) -> None:
    assert await opens(listed_server.url, LISTED, transports)
    assert await opens(listed_server.url, LISTED + "/", transports)
    assert await opens(listed_server.url, f"http://127.0.0.1:{listed_server.port}", transports)
    assert not await opens(listed_server.url, EVIL, transports)
    assert not await opens(listed_server.url, "https://app.example.com.evil.net", transports)


async def test_no_origin_still_needs_a_token(server: RunningServer) -> None:
    rec = Recorder()
    try:
        with pytest.raises(Exception):  # noqa: B017, PT011
            await rec.connect(server.url, None)
    finally:
        await rec.close()


async def test_raw_endpoint_checks_origin_the_same_way(listed_server: RunningServer) -> None:
    url = listed_server.url
    assert await raw_verdict(url, EVIL) == ("refused", 4403)
    assert await raw_verdict(url, "null") == ("refused", 4403)
    assert await raw_verdict(url, LISTED) == ("open", None)
    assert await raw_verdict(url, f"http://127.0.0.1:{listed_server.port}") == ("open", None)
    assert await raw_verdict(url, None) == ("open", None)


async def test_raw_refusal_for_origin_comes_before_the_token(server: RunningServer) -> None:
    async with raw_ws(server.url, token=None, headers={"Origin": EVIL}) as ws:
        frame = await next_json(ws)
        assert (frame["type"], frame["code"]) == ("error", "forbidden")
        assert await closed_with(ws) == 4403


async def test_http_cors_follows_the_same_list(listed_server: RunningServer) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    async with aiohttp.ClientSession() as http:
        url = f"{listed_server.url}/auth/token"
        async with http.options(url, headers={"Origin": LISTED, **preflight}) as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == LISTED
        async with http.options(url, headers={"Origin": EVIL, **preflight}) as resp:
            assert resp.headers.get("Access-Control-Allow-Origin") is None
        async with http.get(f"{listed_server.url}/health", headers={"Origin": EVIL}) as resp:
            assert resp.headers.get("Access-Control-Allow-Origin") is None
