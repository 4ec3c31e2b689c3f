"""A WebSocket packet is written at once when nothing waits before it
(events/transport/internals/engineio_socket.py ``RelaySocket.send`` and
uvicorn_websocket.py ``send_text_now``); otherwise it queues, and order holds."""

from __future__ import annotations

import aiohttp
import orjson

from tests.harness import RunningServer
from tests.integration.test_eio_socket import eio_websocket


async def _received(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[int]:
    seqs: list[int] = []
    while len(seqs) < count:
        text = await ws.receive_str(timeout=5)
        if text == "2":  # a ping
            await ws.send_str("3")
            continue
        assert text.startswith("42"), text
        event, payload = orjson.loads(text[2:])
        if event == "token":  # (the server's ``session`` event comes first)
            seqs.append(payload["seq"])
    return seqs


async def test_an_event_with_nothing_queued_is_written_at_once(server: RunningServer) -> None:
    sio, eio = server.app.runtime.sio, server.app.runtime.sio.eio
    async with aiohttp.ClientSession() as http:
        ws, _opened = await eio_websocket(server, http)
        sid = next(iter(server.app.runtime.connections.all())).conn_id
        sock = next(iter(eio.sockets.values()))
        for seq in range(50):  # no await that lets the writer task run in between
            await sio.emit("token", {"request_id": "r", "seq": seq, "content": "x"}, to=sid)
            assert sock.queue.qsize() == 0  # handed to the transport, not queued
            assert sock.unsent == 0
        assert await _received(ws, 50) == list(range(50))
        await ws.close()


async def test_an_event_behind_a_write_in_flight_queues_and_keeps_its_order(
    server: RunningServer,
) -> None:
    sio, eio = server.app.runtime.sio, server.app.runtime.sio.eio
    async with aiohttp.ClientSession() as http:
        ws, _opened = await eio_websocket(server, http)
        sid = next(iter(server.app.runtime.connections.all())).conn_id
        sock = next(iter(eio.sockets.values()))

        async def emit(seq: int) -> None:
            await sio.emit("token", {"request_id": "r", "seq": seq, "content": "x"}, to=sid)

        sock.writing_since = 1.0  # as while the writer task waits for a write to drain
        await emit(0)
        sock.writing_since = 0.0
        assert sock.queue.qsize() == 1  # not written past the write in flight
        await emit(1)  # something waits before it: queued too, not written first
        assert sock.queue.qsize() == 2
        assert await _received(ws, 2) == [0, 1]  # the writer task sends both, in order
        assert sock.queue.qsize() == 0
        await emit(2)  # nothing waits any more: written at once
        assert sock.queue.qsize() == 0
        assert await _received(ws, 1) == [2]
        await ws.close()
