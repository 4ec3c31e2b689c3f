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

Invariant 7 (a client that does not read is cut off): over a WebSocket, a packet is
encoded when it is queued, so the socket knows how many bytes wait for its client
(``unsent``); past ``max_send_buffer_bytes``, or when one write has not drained for
``send_timeout_s`` (the server's watchdog looks once a second), the transport is
*aborted* (``abort_transport``: no close handshake a non-reader would never complete).
Engine.IO then sees a lost transport, so the client's streams stay resumable for
``RESUME_GRACE_S``.  Read from python-engineio 4.15.1: ``RelaySocket.send`` queues an
``_Encoded`` (the ``encode()``/``packet_type``/``binary`` that ``_websocket_handler``'s
writer reads), ``cut_off`` aborts through the scope extension of uvicorn_websocket.py
(the environ kept by ``StrictWebSocket.__call__``), ``close`` overrides
``AsyncSocket.close(wait, abort, reason)`` so a cut-off socket waits for nothing;
``RelayEngineServer.watch_writes`` (a timer started on the first ``connect`` through
``_trigger_event``) and ``cut_off_all`` (at shutdown, from server/lifecycle.py) read
``self.sockets``.  Issue 16, fault 3; correctness, not measured.

Direct write (issue 17, point 5): a WebSocket packet with nothing queued before it and no
write in flight is written at once, in the sender's task, through ``send_text`` of the
scope extension of uvicorn_websocket.py (uvicorn 0.55.0 ``send``'s framing and write,
declined whenever ``send`` would wait or refuse: transport paused, closing, closed);
otherwise it queues as above, so the order holds and the bounds of invariant 7 apply
unchanged.  That saves the writer task's wake-up and the ASGI ``send`` layers per
``token`` event.  Measured with callgrind (instructions of the server process over a
fixed paced load through real sockets: 2 clients x 100 tokens 50 ms apart, one event per
delta, before and after in the same minute): 250.5k → 225.9k instructions per delta
(-9.8%).

``RelayEngineServer`` gives every new connection a ``RelaySocket``; python-socketio builds it
through ``RelayServer._engineio_server_class``.  It also installs the ASGI driver pieces
of engineio_asgi.py in its own copy of python-engineio's driver table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import engineio
from engineio import exceptions, packet
from engineio.async_socket import AsyncSocket

from events.transport.internals.engineio_asgi import StrictWebSocket, translate_request
from events.transport.internals.packet_queue import PacketQueue
from events.transport.internals.uvicorn_websocket import ABORT_EXTENSION

# Packets waiting to be written to one client: a client that does not read what it is
# sent (its TCP window stays shut) is closed when its queue reaches this.
MAX_QUEUED_PACKETS = 10_000

logger = logging.getLogger(__name__)


class _Encoded:
    """A packet encoded when queued (WebSocket only): its size is known while it waits.

    Stands in for ``engineio.packet.Packet`` in the queue (python-engineio 4.15.1: the
    writer calls ``encode()`` and reads ``packet_type`` and ``binary``); correctness (the
    send buffer bound of invariant 7), not measured.
    """

    __slots__ = ("data", "packet_type")

    binary = False

    def __init__(self, packet_type: int, data: str) -> None:
        self.packet_type = packet_type
        self.data = data

    def encode(self, b64: bool = False) -> str:
        return self.data


class RelaySocket(AsyncSocket):  # type: ignore[misc]
    # set by engineio's BaseSocket.__init__
    last_ping: float | None
    connected: bool
    upgrading: bool
    upgraded: bool
    closing: bool
    closed: bool
    _overflow_task: asyncio.Future[None]
    unsent = 0  # bytes queued for the client, not yet handed to its transport
    writing_since = 0.0  # loop time a write started that has not returned (0: none)
    _abort: Callable[[], None] | None = None  # aborts the transport (set once a WebSocket)
    _send_now: Callable[[str], bool] | None = None  # writes at once when nothing waits
    _cut = False

    async def send(self, pkt: packet.Packet) -> None:
        """Queue a packet for the client (``AsyncSocket.send`` without its extra awaits)."""
        if self.closed:
            raise exceptions.SocketIsClosedError()
        if self._cut:
            return  # aborted: nothing reaches this client any more
        last_ping = self.last_ping
        if last_ping and time.time() - last_ping > self.server.ping_timeout:
            # the client stopped answering pings: same as AsyncSocket.check_ping_timeout
            await self.close(wait=False, abort=False, reason=self.server.reason.PING_TIMEOUT)
            return
        queue = self.queue
        waiting = queue.qsize()
        if waiting >= self.server.max_queued_packets and pkt.packet_type != packet.CLOSE:
            self._overflow()  # the packet is dropped: the connection is closing
            return
        if self._abort is not None and pkt.packet_type != packet.CLOSE:
            data = pkt.encode()
            send_now = self._send_now
            if (
                send_now is not None
                and not waiting  # nothing waits before it, and no write is in flight
                and not self.writing_since
                and not self.closing
                and isinstance(data, str)
                and send_now(data)
            ):
                return  # written: no trip through the writer task
            encoded = _Encoded(pkt.packet_type, data)
            self.unsent += len(encoded.data)
            if self.unsent > self.server.max_send_buffer_bytes:
                self.cut_off(f"over {self.server.max_send_buffer_bytes} bytes unsent")
                return
            queue.put_nowait(encoded)
            return
        queue.put_nowait(pkt)

    def cut_off(self, why: str) -> None:
        """Invariant 7: abort the transport of a client that does not read (no close
        handshake); Engine.IO sees a lost transport, so its streams stay resumable."""
        if self._cut or self.closed:
            return
        self._cut = True
        logger.warning("aborting connection %s: the client does not read (%s)", self.sid, why)
        if self._abort is not None:
            self._abort()
        else:  # a server without the abort extension: close as well as it can
            self._overflow()

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        """A client cut off never takes what is queued: closing it waits for nothing."""
        if self._cut:
            wait, abort = False, True
        await super().close(wait=wait, abort=abort, reason=reason)

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

        self._abort, self._send_now = _transport_hooks(ws)
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
        loop = asyncio.get_running_loop()
        while True:
            pkt = await queue.get()  # returns at once while packets are waiting
            queue.task_done()
            if pkt is None:
                break
            if isinstance(pkt, _Encoded):
                data = pkt.data
                self.unsent -= len(data)
            else:
                data = pkt.encode()
            self.writing_since = loop.time()  # the watchdog cuts off a write that hangs
            try:
                await ws.send(data)
            except Exception:
                break
            finally:
                self.writing_since = 0.0
        if not self._cut:
            await ws.close()


def _transport_hooks(
    ws: Any,
) -> tuple[Callable[[], None] | None, Callable[[str], bool] | None]:
    """The transport's abort and direct write, when the server offers them
    (``RelayWebSocketProtocol``)."""
    environ = getattr(ws, "environ", None)
    scope = environ.get("asgi.scope") if isinstance(environ, dict) else None
    extension = (scope or {}).get("extensions", {}).get(ABORT_EXTENSION)
    if not isinstance(extension, dict):
        return None, None
    abort, send_now = extension.get("abort"), extension.get("send_text")
    return (abort if callable(abort) else None, send_now if callable(send_now) else None)


class RelayEngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server, handing out ``RelaySocket``s."""

    max_queued_packets = MAX_QUEUED_PACKETS
    send_timeout_s = 30.0  # SEND_TIMEOUT_S
    max_send_buffer_bytes = 4_194_304  # MAX_SEND_BUFFER_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog: asyncio.TimerHandle | None = None
        # the drivers' table is shared by every engineio server: copy, then replace
        drivers: dict[str, Any] = getattr(self, "_async")  # noqa: B009 (untyped base)
        self._async = {
            **drivers,
            "translate_request": translate_request,
            "websocket": StrictWebSocket,
        }

    def create_queue(self, *args: Any, **kwargs: Any) -> PacketQueue:
        return PacketQueue()

    def watch_writes(self) -> None:
        """Once a second: cut off every client whose write has hung for ``send_timeout_s``."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for sock in list(self.sockets.values()):
            since = getattr(sock, "writing_since", 0.0)
            if since and now - since > self.send_timeout_s:
                sock.cut_off(f"nothing drained for {self.send_timeout_s:g} s")
        self._watchdog = loop.call_later(min(1.0, self.send_timeout_s / 4), self.watch_writes)

    def stop_watching(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def cut_off_all(self, why: str) -> int:
        """Abort every WebSocket still writing (at shutdown, after the last events had
        their chance); returns how many."""
        stuck = [s for s in self.sockets.values() if getattr(s, "writing_since", 0.0)]
        for sock in stuck:
            sock.cut_off(why)
        return len(stuck)

    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        if event == "connect" and self._watchdog is None:
            self.watch_writes()
        if event == "connect" and args:
            sock = self.sockets.get(args[0])
            if type(sock) is AsyncSocket:
                # set up by _handle_connect a moment ago; nothing runs on it yet
                sock.__class__ = RelaySocket
        return await super()._trigger_event(event, *args, **kwargs)
