"""The Engine.IO session: the heartbeat settings in the handshake, the connect deadline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from tests.harness import RunningServer, make_token, run_server


@pytest.mark.parametrize("transport", ["polling", "websocket"])
async def test_handshake_carries_ping_interval_and_timeout(
    settings_for: Callable[..., Any], transport: str
) -> None:
    settings = settings_for(ping_interval_s=7, ping_timeout_s=3.5)
    async with run_server(settings) as server, aiohttp.ClientSession() as http:
        if transport == "polling":
            async with http.get(f"{server.url}/socket.io/?EIO=4&transport=polling") as resp:
                opened = await resp.text()
        else:
            ws = await http.ws_connect(f"{server.ws_url}/socket.io/?EIO=4&transport=websocket")
            opened = await ws.receive_str(timeout=5)
            await ws.close()
    assert opened.startswith("0"), opened
    handshake = orjson.loads(opened[1:])
    assert handshake["pingInterval"] == 7000
    assert handshake["pingTimeout"] == 3500


async def open_session(server: RunningServer, http: aiohttp.ClientSession) -> Any:
    ws = await http.ws_connect(f"{server.ws_url}/socket.io/?EIO=4&transport=websocket")
    assert (await ws.receive_str(timeout=5)).startswith("0{")
    return ws


async def join(ws: Any) -> None:
    """Join namespace / and read its answers: the CONNECT packet, then ``session``."""
    await ws.send_str("40" + orjson.dumps({"token": make_token("alice")}).decode())
    replies: list[str] = []
    while not replies or not replies[-1].startswith('42["session"'):
        reply = await ws.receive_str(timeout=5)
        if reply == "2":
            await ws.send_str("3")
        else:
            replies.append(reply)
    assert replies[0].startswith("40{"), replies


async def closed(ws: Any) -> bool:
    """Read until the server closes the session (answering pings meanwhile)."""
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type != aiohttp.WSMsgType.TEXT:
            return msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        if msg.data == "2":
            await ws.send_str("3")


async def test_a_client_that_joined_and_left_is_not_closed_by_the_connect_deadline(
    settings_for: Callable[..., Any],
) -> None:
    """The deadline ends at the first successful join, as in the JavaScript server."""
    async with (
        run_server(settings_for(connect_timeout_s=0.5)) as server,
        aiohttp.ClientSession() as http,
    ):
        left = await open_session(server, http)
        await join(left)
        await left.send_str("41")  # leave namespace /, keep the Engine.IO session
        # A session opened after it that never joins: once the deadline has closed this
        # one, the deadline of the first (armed earlier) has passed too.
        never = await open_session(server, http)
        assert await closed(never)
        assert not left.closed
        await join(left)  # the session is still served
        await left.close()
