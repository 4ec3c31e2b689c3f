"""The leaner Engine.IO socket (events/transport/internals/engineio_socket.py).

Transports, heartbeat, closing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import orjson
import pytest

from events.transport.internals.engineio_socket import RelaySocket
from tests.harness import Recorder, RunningServer, assert_clean_stream, make_token
from tests.upstream_scenarios import NORMAL_TEXT

USER_MSG = [{"role": "user", "content": "Say hello"}]


async def chat_once(rec: Recorder, request_id: str) -> None:
    ack = await rec.call("chat", {"request_id": request_id, "messages": USER_MSG})
    assert ack == {"ok": True, "request_id": request_id}
    event, _done = await rec.terminal(request_id)
    assert event == "done"
    assert_clean_stream(rec, request_id)
    assert rec.text(request_id) == NORMAL_TEXT


@pytest.mark.parametrize(
    "transports",
    [["websocket"], ["polling", "websocket"], ["polling"]],
    ids=["websocket", "polling-then-upgrade", "polling-only"],
)
async def test_every_transport_streams_a_chat(
    server: RunningServer, recorders: Callable[[], Recorder], transports: list[str]
) -> None:
    eio = server.app.runtime.sio.eio
    eio.ping_interval, eio.ping_timeout = 1, 1  # a polling client disconnects within seconds
    rec = recorders()
    await rec.connect(server.url, make_token("alice"), transports=transports)
    await rec.wait_event("session")
    await chat_once(rec, "r1")
    await chat_once(rec, "r2")
    sockets = list(server.app.runtime.sio.eio.sockets.values())
    assert sockets
    assert all(isinstance(sock, RelaySocket) for sock in sockets)
    if transports[-1] == "websocket":
        assert rec.client.transport() == "websocket"


async def eio_websocket(
    server: RunningServer, http: aiohttp.ClientSession
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, object]]:
    """A bare Engine.IO v4 client: open a WebSocket and join namespace / with a token."""
    ws = await http.ws_connect(f"{server.ws_url}/socket.io/?EIO=4&transport=websocket")
    opened = await ws.receive_str(timeout=5)
    assert opened.startswith("0")
    await ws.send_str("40" + orjson.dumps({"token": make_token("alice")}).decode())
    connected = await ws.receive_str(timeout=5)
    assert connected.startswith("40"), connected
    return ws, orjson.loads(opened[1:])


async def test_a_client_that_answers_pings_stays_connected(server: RunningServer) -> None:
    eio = server.app.runtime.sio.eio
    eio.ping_interval, eio.ping_timeout = 0.2, 0.3
    async with aiohttp.ClientSession() as http:
        ws, _opened = await eio_websocket(server, http)
        pings = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            msg = await ws.receive(timeout=2)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            if msg.data == "2":
                pings += 1
                await ws.send_str("3")
        assert pings >= 4
        assert not ws.closed
        await ws.close()


async def test_a_silent_client_is_disconnected(server: RunningServer) -> None:
    eio = server.app.runtime.sio.eio
    eio.ping_interval, eio.ping_timeout = 0.2, 0.3
    async with aiohttp.ClientSession() as http:
        ws, _opened = await eio_websocket(server, http)
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 5:
            msg = await ws.receive(timeout=5)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                closed = True
                break
        assert closed
        assert time.monotonic() - started < 3
    for _ in range(100):
        if not server.app.runtime.connections.all():
            break
        await asyncio.sleep(0.02)
    assert server.app.runtime.connections.all() == []


async def test_a_packet_over_the_frame_limit_closes_the_connection(
    settings_for: Callable[..., object],
) -> None:
    from tests.harness import run_server

    async with (
        run_server(settings_for(max_frame_bytes=1000)) as srv,
        aiohttp.ClientSession() as http,
    ):
        ws, _opened = await eio_websocket(srv, http)
        await ws.send_str('42["chat",' + orjson.dumps({"x": "y" * 2000}).decode() + "]")
        msg = await ws.receive(timeout=5)
        while msg.type == aiohttp.WSMsgType.TEXT:
            msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_a_client_that_does_not_read_is_closed_at_the_queue_bound(
    server: RunningServer,
) -> None:
    eio = server.app.runtime.sio.eio
    eio.max_queued_packets = 20
    sio = server.app.runtime.sio
    async with aiohttp.ClientSession() as http:
        ws, _opened = await eio_websocket(server, http)
        sid = next(iter(server.app.runtime.connections.all())).conn_id
        sock = next(iter(eio.sockets.values()))
        big = "x" * 65_536  # the socket's buffers fill after a few of these
        highest = 0
        for i in range(400):  # ~26 MB, never read by the client
            await sio.emit("token", {"request_id": "r", "seq": i, "content": big}, to=sid)
            highest = max(highest, sock.queue.qsize())
            if sock.closed:
                break
            await asyncio.sleep(0)
        for _ in range(200):
            if sock.closed:
                break
            await asyncio.sleep(0.01)
        assert sock.closed
        assert highest <= 20 + 2  # the bound, then the close packet and the writer's stop
        await ws.close()
    for _ in range(100):
        if not server.app.runtime.connections.all():
            break
        await asyncio.sleep(0.02)
    assert server.app.runtime.connections.all() == []
