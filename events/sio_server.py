"""python-socketio pieces we adjust: the server and its client managers.

* Client-sent events named like reserved ones (``connect``, ``disconnect``…) are
  ignored instead of reaching those handlers (PROTOCOL.md §6).
* Hostile input ends in an error or a clean close, never in a stuck or leaked
  connection: a packet that does not parse, an event that is not ``[name, ...]``,
  binary attachments (not part of the protocol, §6; python-socketio would hold them, and
  a wrong attachment count wedges the connection), Engine.IO garbage on a WebSocket,
  and a client that sends but never reads (its outgoing queue is bounded) are closed.
  An unknown event that asks for an acknowledgement gets ``invalid_payload``.
* Stream events for a client that is being fed from the stream log (after ``resume``)
  are not also delivered live to it: the managers skip such sids on this node, so a
  resumed client sees every token exactly once.  Works for the in-memory manager and,
  on every node, for the Redis manager.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import socketio
from engineio.async_drivers import asgi as eio_asgi
from socketio import packet as sio_packet

from events.errors import ErrorCode, ProtocolError

logger = logging.getLogger(__name__)

RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "__disconnect_final"})
_STREAM_EVENTS = frozenset({"token", "done", "error"})
# Engine.IO packet types a client may send on a WebSocket: close, ping, pong, message,
# upgrade, noop.  Anything else (open, binary frames, garbage) closes the transport.
_CLIENT_EIO_TYPES = frozenset("123456")
# Packets waiting to be written to one client; a client that sends but does not read
# is closed when its queue passes this.
MAX_QUEUED_PACKETS = 10_000


class TailRegistry:
    """Sids on this node that get a request's events from the log, not live."""

    def __init__(self) -> None:
        self._sids: dict[tuple[str, str | None], set[str]] = {}

    def __bool__(self) -> bool:
        return bool(self._sids)

    def add(self, request_id: str, room: str | None, sid: str) -> None:
        self._sids.setdefault((request_id, room), set()).add(sid)

    def discard(self, request_id: str, room: str | None, sid: str) -> None:
        sids = self._sids.get((request_id, room))
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self._sids[(request_id, room)]

    def skip(self, event: str, data: Any, skip_sid: Any) -> Any:
        if event not in _STREAM_EVENTS or not isinstance(data, dict):
            return skip_sid
        sids = self._sids.get((data.get("request_id"), data.get("room")))  # type: ignore[arg-type]
        if not sids:
            return skip_sid
        skip = list(sids)
        if isinstance(skip_sid, list):
            skip.extend(skip_sid)
        elif skip_sid is not None:
            skip.append(skip_sid)
        return skip


class _StrictWebSocket(eio_asgi.WebSocket):  # type: ignore[misc]
    """The ASGI WebSocket of Engine.IO, closing on frames that are no Engine.IO text packet.

    python-engineio raises on such a frame outside its error handling, which leaves the
    session behind until its ping timeout; raising ``OSError`` here ends it cleanly.
    """

    async def wait(self) -> Any:
        data = await super().wait()
        if not isinstance(data, str) or data[:1] not in _CLIENT_EIO_TYPES:
            raise OSError("not an Engine.IO text packet")
        return data


class RelayServer(socketio.AsyncServer):  # type: ignore[misc]
    def __init__(self, *, connect_timeout_s: float = 45.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # An Engine.IO session must join the namespace within this (as Socket.IO's
        # connectTimeout), or it is closed: answering pings alone holds no connection.
        self.connect_timeout_s = connect_timeout_s
        self._tasks: set[asyncio.Task[None]] = set()
        # Engine.IO handles a connection's packets in order (Socket.IO still runs event
        # handlers as tasks): a client's DISCONNECT packet is then seen before the
        # socket closes, so a deliberate disconnect is told apart from a lost transport.
        self.eio.async_handlers = False
        # The drivers' table is shared by every engineio server: copy, then replace.
        self.eio._async = {**self.eio._async, "websocket": _StrictWebSocket}

    async def close_transport(self, eio_sid: str, why: str) -> None:
        """Close a client's Engine.IO session now (its streams stop, as on a disconnect)."""
        sock = self.eio.sockets.get(eio_sid)
        if sock is None or sock.closed or sock.closing:
            return
        logger.info("closing connection %s: %s", eio_sid, why)
        await sock.close(wait=False, abort=False, reason=self.reason.SERVER_DISCONNECT)
        sock.queue.put_nowait(None)  # ends the transport's writer, which closes the socket

    async def _handle_eio_connect(self, eio_sid: str, environ: Any) -> Any:
        result = await super()._handle_eio_connect(eio_sid, environ)
        loop = asyncio.get_running_loop()
        loop.call_later(self.connect_timeout_s, self._connect_deadline, eio_sid)
        return result

    def _connect_deadline(self, eio_sid: str) -> None:
        if eio_sid in self.eio.sockets and not self.manager.sid_from_eio_sid(eio_sid, "/"):
            task = asyncio.ensure_future(self.close_transport(eio_sid, "no connect in time"))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if not isinstance(data, str):
            await self.close_transport(eio_sid, "binary attachments are not supported")
            return
        sock = self.eio.sockets.get(eio_sid)
        if sock is not None and sock.queue.qsize() > MAX_QUEUED_PACKETS:
            await self.close_transport(eio_sid, "the client does not read its events")
            return
        try:
            pkt = self.packet_class(encoded_packet=data)
        except Exception:
            await self.close_transport(eio_sid, "malformed Socket.IO packet")
            return
        kind = pkt.packet_type
        if kind in (sio_packet.EVENT, sio_packet.ACK) and not self.manager.sid_from_eio_sid(
            eio_sid, pkt.namespace or "/"
        ):
            await self.close_transport(eio_sid, "packet for a namespace it has not joined")
            return
        if kind == sio_packet.EVENT:
            if not isinstance(pkt.data, list) or not pkt.data or not isinstance(pkt.data[0], str):
                await self.close_transport(eio_sid, "malformed event packet")
                return
            await self._handle_event(eio_sid, pkt.namespace, pkt.id, pkt.data)
        elif kind == sio_packet.CONNECT:
            await self._handle_connect(eio_sid, pkt.namespace, pkt.data)
        elif kind == sio_packet.DISCONNECT:
            await self._handle_disconnect(eio_sid, pkt.namespace, self.reason.CLIENT_DISCONNECT)
        elif kind == sio_packet.ACK:
            await self._handle_ack(eio_sid, pkt.namespace, pkt.id, pkt.data)
        elif kind in (sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK):
            await self.close_transport(eio_sid, "binary attachments are not supported")
        else:
            await self.close_transport(eio_sid, "unexpected Socket.IO packet type")

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: Any, data: Any) -> None:
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            return
        name = data[0]
        if name in RESERVED_EVENTS:
            return
        namespace = namespace or "/"
        handlers = self.handlers.get(namespace, {})
        if id is not None and name not in handlers and "*" not in handlers:
            sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
            if sid is not None and self.manager.is_connected(sid, namespace):
                error = ProtocolError(ErrorCode.INVALID_PAYLOAD, f"Unknown event {name[:64]!r}.")
                ack = {"ok": False, "error": error.to_wire()}
                await self._send_packet(
                    eio_sid,
                    self.packet_class(sio_packet.ACK, namespace=namespace, id=id, data=[ack]),
                )
            return
        await super()._handle_event(eio_sid, namespace, id, data)


class MemoryManager(socketio.AsyncManager):  # type: ignore[misc]
    def __init__(self, tails: TailRegistry) -> None:
        super().__init__()
        self.tails = tails

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        if self.tails:
            skip_sid = self.tails.skip(event, data, skip_sid)
        await super().emit(
            event,
            data,
            namespace,
            room=room,
            skip_sid=skip_sid,
            callback=callback,
            to=to,
            **kwargs,
        )


class RedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    def __init__(self, url: str, tails: TailRegistry, channel: str = "llm-relay") -> None:
        super().__init__(url, channel=channel)
        self.tails = tails

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if self.tails:
            message = dict(message)
            data = message.get("data")
            payload = data[0] if isinstance(data, list) and len(data) == 1 else data
            message["skip_sid"] = self.tails.skip(
                message.get("event", ""), payload, message.get("skip_sid")
            )
        await super()._handle_emit(message)
