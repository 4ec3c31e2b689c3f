"""Engine.IO sockets with a leaner WebSocket loop (same protocol, fewer tasks and timers).

Read from python-engineio 4.15.1: ``AsyncSocket._websocket_handler`` (its upgrade
handshake is copied), ``AsyncSocket.send`` and ``schedule_ping`` are replaced;
``AsyncServer._trigger_event`` swaps the class of a new socket, ``create_queue`` gives
it a ``PacketQueue``.

For every WebSocket connection python-engineio runs a writer task that waits on the
packet queue through ``asyncio.wait_for`` (a new task and timer per wake-up, so per
``token`` event), a reader that starts a task and a timer for every frame it receives, and
a ping task that sleeps between pings.  ``RelaySocket`` keeps the packet queue (an emit
never waits for a slow client) and the heartbeat rules, with one writer task that simply
awaits the queue, the reader in the connection's own task under one rescheduled deadline,
and pings from a timer callback.  Long-polling is python-engineio's code, unchanged.

The queue is bounded where packets go in: a client that does not read what it is sent
is closed once ``max_queued_packets`` wait for it (the packet that would pass the bound
is dropped; the close runs in its own task, not in the sender's).  That bound is
hardening and stays whatever the loop is worth.

Measured with ``python -m bench`` (a checkout without the override as target "before",
in the same run, runs interleaved; 2 vCPUs shared with other jobs).  RSS per idle
connection is steady run to run; CPU seconds per 100k tokens is not: repeated runs of
one target spread by ±20-30% on this machine, so a CPU gain below that is a hint, not a
measurement.  Latency depends on the machine's load and is not used here.

* ``RelaySocket``: RSS per idle connection 34.0 → 30.9 KiB (-3.1 KiB, -9%; 1,000
  connections, medians of 3).  CPU per 100k tokens, medians of 5 at default settings:
  paced 4.48 → 3.95 s (-12%), burst 0.97 → 0.95 s (none); with ``TOKEN_COALESCE_MS=0``,
  medians of 3: paced 5.93 → 5.10 s (-14%), burst 0.92 → 0.90 s.  Kept for the memory
  and the paced CPU; the queue bound is hardening and would stay anyway.
* ``create_queue`` → ``PacketQueue``: 33.4 → 31.1 KiB per idle connection (-2.3 KiB,
  -7%); CPU per 100k tokens no difference (medians of 5: paced 4.57 → 4.42 s, burst
  0.71 → 0.76 s).  Kept for the memory.

``RelayEngineServer`` gives every new connection a ``RelaySocket``; python-socketio builds it
through ``RelayServer._engineio_server_class``.  It also installs the ASGI driver pieces
of engineio_asgi.py in its own copy of python-engineio's driver table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import engineio
from engineio import exceptions, packet
from engineio.async_socket import AsyncSocket

from events.transport.internals.engineio_asgi import StrictWebSocket, translate_request
from events.transport.internals.packet_queue import PacketQueue

# Packets waiting to be written to one client: a client that does not read what it is
# sent (its TCP window stays shut) is closed when its queue reaches this.
MAX_QUEUED_PACKETS = 10_000

logger = logging.getLogger(__name__)


class RelaySocket(AsyncSocket):  # type: ignore[misc]
    # set by engineio's BaseSocket.__init__
    last_ping: float | None
    connected: bool
    upgrading: bool
    upgraded: bool
    closing: bool
    closed: bool
    _overflow_task: asyncio.Future[None]

    async def send(self, pkt: packet.Packet) -> None:
        """Queue a packet for the client (``AsyncSocket.send`` without its extra awaits)."""
        if self.closed:
            raise exceptions.SocketIsClosedError()
        last_ping = self.last_ping
        if last_ping and time.time() - last_ping > self.server.ping_timeout:
            # the client stopped answering pings: same as AsyncSocket.check_ping_timeout
            await self.close(wait=False, abort=False, reason=self.server.reason.PING_TIMEOUT)
            return
        queue = self.queue
        if queue.qsize() >= self.server.max_queued_packets and pkt.packet_type != packet.CLOSE:
            self._overflow()  # the packet is dropped: the connection is closing
            return
        queue.put_nowait(pkt)

    def _overflow(self) -> None:
        """Close a client that does not read, from its own task (not the sender's)."""
        if self.closing or self.closed or "_overflow_task" in self.__dict__:
            return
        self._overflow_task = asyncio.ensure_future(self._close_unread())

    async def _close_unread(self) -> None:
        logger.info("closing connection %s: the client does not read its events", self.sid)
        await self.close(wait=False, abort=False, reason=self.server.reason.SERVER_DISCONNECT)
        self.queue.put_nowait(None)  # ends the writer, which closes the socket

    def schedule_ping(self) -> None:
        # only schedule a new ping if the previous ping wait cycle completed
        if self.last_ping:
            self.last_ping = None
            loop = asyncio.get_running_loop()
            loop.call_later(self.server.ping_interval, self._ping)

    def _ping(self) -> None:
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self.queue.put_nowait(packet.Packet(packet.PING))

    async def _websocket_handler(self, ws: Any) -> None:
        """Engine.IO over a WebSocket: upgrade handshake, then read and write."""
        max_size = self.server.max_http_buffer_size

        async def websocket_wait() -> Any:
            data = await ws.wait()
            if data and len(data) > max_size:
                raise ValueError("packet is too large")
            return data

        if self.connected:
            # the socket was already connected (long-polling), so this is an upgrade
            self.upgrading = True  # hold packet sends during the upgrade
            try:
                pkt = await websocket_wait()
            except OSError:  # pragma: no cover
                return
            decoded = packet.Packet(encoded_packet=pkt)
            if decoded.packet_type != packet.PING or decoded.data != "probe":
                self.upgrading = False
                return
            await ws.send(packet.Packet(packet.PONG, data="probe").encode())
            await self.queue.put(packet.Packet(packet.NOOP))  # end the pending poll
            try:
                pkt = await websocket_wait()
            except OSError:  # pragma: no cover
                self.upgrading = False
                return
            decoded = packet.Packet(encoded_packet=pkt)
            if decoded.packet_type != packet.UPGRADE:
                self.upgraded = False
                self.upgrading = False
                return
            self.upgraded = True
            self.upgrading = False
        else:
            self.connected = True
            self.upgraded = True

        writer = asyncio.ensure_future(self._write_loop(ws))
        await self._read_loop(websocket_wait)
        await self.queue.put(None)  # unlock the writer so it can exit
        await writer
        await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)

    async def _read_loop(self, websocket_wait: Any) -> None:
        """Hand every received packet to the server until the client goes silent or away."""
        loop = asyncio.get_running_loop()
        silence = self.server.ping_interval + self.server.ping_timeout
        try:
            async with asyncio.timeout(None) as deadline:
                while True:
                    deadline.reschedule(loop.time() + silence)
                    encoded = await websocket_wait()
                    deadline.reschedule(None)
                    if encoded is None:
                        return  # connection closed by the client
                    try:
                        await self.receive(packet.Packet(encoded_packet=encoded))
                    except exceptions.UnknownPacketError:  # pragma: no cover
                        pass
                    except exceptions.SocketIsClosedError:  # pragma: no cover
                        return
                    except Exception:  # pragma: no cover
                        # log it and carry on, as python-engineio does
                        self.server.logger.exception("Unknown receive error")
                    # Let the handlers this packet started run before the next one is read
                    # (python-engineio's reader yields once per packet too): a client that
                    # floods packets cannot keep the loop to itself.
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            return  # the server is going away: end the connection as python-engineio does
        except Exception:  # silence (TimeoutError), a closed socket, a packet too large
            return

    async def _write_loop(self, ws: Any) -> None:
        queue = self.queue
        while True:
            pkt = await queue.get()  # returns at once while packets are waiting
            queue.task_done()
            if pkt is None:
                break
            try:
                await ws.send(pkt.encode())
            except Exception:
                break
        await ws.close()


class RelayEngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server, handing out ``RelaySocket``s."""

    max_queued_packets = MAX_QUEUED_PACKETS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the drivers' table is shared by every engineio server: copy, then replace
        drivers: dict[str, Any] = getattr(self, "_async")  # noqa: B009 (untyped base)
        self._async = {
            **drivers,
            "translate_request": translate_request,
            "websocket": StrictWebSocket,
        }

    def create_queue(self, *args: Any, **kwargs: Any) -> PacketQueue:
        return PacketQueue()

    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        if event == "connect" and args:
            sock = self.sockets.get(args[0])
            if type(sock) is AsyncSocket:
                # set up by _handle_connect a moment ago; nothing runs on it yet
                sock.__class__ = RelaySocket
        return await super()._trigger_event(event, *args, **kwargs)
