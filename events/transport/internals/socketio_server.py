"""python-socketio's ``AsyncServer`` with stricter input handling and a connect deadline.

Read from python-socketio 5.18.1 (``AsyncServer._handle_eio_connect``,
``_handle_eio_message``, ``_handle_event``, ``_handle_connect``, ``_engineio_server_class``).
These overrides are hardening, not speed; they stay whatever they cost (not measured):

* Client-sent events named like reserved ones (``connect``, ``disconnect``…) are
  ignored instead of reaching those handlers (PROTOCOL.md §6).
* Hostile input ends in an error or a clean close, never in a stuck or leaked
  connection: a packet that does not parse, an event that is not ``[name, ...]``, a
  packet for a namespace the client has not joined, binary attachments (not part of the
  protocol, §6; python-socketio would hold them, and a wrong attachment count wedges the
  connection), and a client that sends but never reads (its outgoing queue is bounded).
  An unknown event that asks for an acknowledgement gets ``invalid_payload``.
* An Engine.IO session that joins no namespace within ``connect_timeout_s`` is closed
  (Socket.IO's ``connectTimeout``; python-socketio has none); the deadline is cancelled
  by the first successful join, as in the JavaScript server.
* ``send_timeout_s`` and ``max_send_buffer_bytes`` (SEND_TIMEOUT_S,
  MAX_SEND_BUFFER_BYTES) are handed to ``RelayEngineServer``: a client that does not
  read is cut off (invariant 7, engineio_socket.py; correctness, not measured).
* Engine.IO runs a connection's packets in order (``async_handlers = False``), and the
  server class is ``RelayEngineServer`` (engineio_socket.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import socketio
from socketio import packet as sio_packet

from events.core.errors import ErrorCode, ProtocolError
from events.transport.internals.engineio_socket import MAX_QUEUED_PACKETS, RelayEngineServer

logger = logging.getLogger(__name__)

RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "__disconnect_final"})

__all__ = ["MAX_QUEUED_PACKETS", "RESERVED_EVENTS", "RelayServer"]


class RelayServer(socketio.AsyncServer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        connect_timeout_s: float = 45.0,
        send_timeout_s: float = 30.0,
        max_send_buffer_bytes: int = 4_194_304,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # invariant 7: a client that drains nothing for this long, or leaves this much
        # unsent, has its transport aborted (engineio_socket.RelaySocket.cut_off)
        self.eio.send_timeout_s = send_timeout_s
        self.eio.max_send_buffer_bytes = max_send_buffer_bytes
        # An Engine.IO session must join a namespace within this (as Socket.IO's
        # connectTimeout), or it is closed: answering pings alone holds no connection.
        self.connect_timeout_s = connect_timeout_s
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Engine.IO handles a connection's packets in order (Socket.IO still runs event
        # handlers as tasks): a client's DISCONNECT packet is then seen before the
        # socket closes, so a deliberate disconnect is told apart from a lost transport.
        self.eio.async_handlers = False

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
        self._deadlines[eio_sid] = loop.call_later(
            self.connect_timeout_s, self._connect_deadline, eio_sid
        )
        return result

    def _connect_deadline(self, eio_sid: str) -> None:
        self._deadlines.pop(eio_sid, None)
        if eio_sid in self.eio.sockets:
            task = asyncio.ensure_future(self.close_transport(eio_sid, "no connect in time"))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _join(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        """A CONNECT packet; the first namespace joined cancels the connect deadline."""
        await self._handle_connect(eio_sid, namespace, data)
        if eio_sid in self._deadlines and self.manager.sid_from_eio_sid(eio_sid, namespace or "/"):
            self._deadlines.pop(eio_sid).cancel()

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
            await self._join(eio_sid, pkt.namespace, pkt.data)
        elif kind == sio_packet.DISCONNECT:
            await self._handle_disconnect(eio_sid, pkt.namespace, self.reason.CLIENT_DISCONNECT)
        elif kind == sio_packet.ACK:
            await self._handle_ack(eio_sid, pkt.namespace, pkt.id, pkt.data)
        elif kind in (sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK):
            await self.close_transport(eio_sid, "binary attachments are not supported")
        else:
            await self.close_transport(eio_sid, "unexpected Socket.IO packet type")

    def _engineio_server_class(self) -> type[RelayEngineServer]:
        return RelayEngineServer  # leaner WebSocket loop per connection (engineio_socket.py)

    def start_manager(self) -> None:
        """Start the client manager now (python-socketio waits for the first client),
        so a node receives other nodes' events, and reports on Redis, from the start."""
        if not getattr(self, "manager_initialized", False):
            self.manager_initialized = True
            self.manager.initialize()

    async def stop_manager(self) -> None:
        close = getattr(self.manager, "aclose", None)
        if close is not None:
            await close()

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
