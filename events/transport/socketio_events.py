"""Socket.IO transport: translates events into ``Relay`` calls and results into acks/events."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import socketio

from auth.authenticator import Authenticator
from auth.origins import log_refusal
from auth.tokens import AuthError, bearer_token
from events.core.admission import refusal
from events.core.connections import Connection, Connections
from events.core.errors import ErrorCode, ProtocolError, to_protocol_error
from events.core.extension import EventContext, EventSpec
from events.core.pipeline import Payload
from events.core.relay import Relay
from events.core.rooms import RoomEvents, room_channel
from events.core.tails import TailRegistry
from events.transport.internals.socketio_server import RESERVED_EVENTS
from services.storage.limits import ConnectionCounter

logger = logging.getLogger(__name__)

TRANSPORT = "socketio"
Handler = Callable[..., Awaitable[Any]]


class SioSink:
    """Live events of one request, to the owner's sid or to a room.

    It hands them to the server's client manager (``AsyncServer.manager``: ours, in-memory
    or Redis), as ``AsyncServer.emit`` does after defaulting the namespace and logging
    every event at info level: one call less per ``token`` event (issue 17, point 5).
    """

    wants_raw = False
    __slots__ = ("_emit", "_to")

    def __init__(self, sio: socketio.AsyncServer, to: str) -> None:
        if not to:  # python-socketio reads a missing target as "everyone"
            raise ValueError("a sink needs a target")
        self._emit = sio.manager.emit
        self._to = to

    async def emit(self, event: str, payload: Payload) -> None:
        await self._emit(event, payload, "/", room=self._to)

    async def raw(self, chunks: list[Payload]) -> None:
        return None


def _acked(handler: Handler) -> Handler:
    """Bad input never crashes a handler: any exception becomes an error ack."""

    @functools.wraps(handler)
    async def wrapper(self: SocketIOEvents, sid: str, *args: Any) -> Any:
        conn = self.connections.get(sid)
        if conn is None:
            return None
        data = args[0] if args else None
        try:
            return await handler(self, conn, data)
        except Exception as exc:
            return {"ok": False, "error": to_protocol_error(exc).to_wire()}

    return wrapper


class SocketIOEvents:
    def __init__(
        self,
        sio: socketio.AsyncServer,
        relay: Relay,
        authenticator: Authenticator,
        connections: Connections,
        connection_counter: ConnectionCounter,
        tails: TailRegistry,
        session_info: Callable[[], Payload],
        rooms: RoomEvents | None = None,
    ) -> None:
        self.sio = sio
        self.relay = relay
        self.authenticator = authenticator
        self.connections = connections
        self.counter = connection_counter
        self.tails = tails
        self.session_info = session_info
        self.rooms = rooms
        self._tasks: set[asyncio.Task[Any]] = set()

    def register(self) -> None:
        on = self.sio.on
        on("connect", self.on_connect)
        on("disconnect", self.on_disconnect)
        on("chat", self.on_chat)
        on("cancel", self.on_cancel)
        on("resume", self.on_resume)
        on("refresh", self.on_refresh)
        on("join", self.on_join)
        on("leave", self.on_leave)

    def add_event(self, spec: EventSpec) -> None:
        """Serve an extension's client event (validation, error acks as for core events)."""
        if spec.name in RESERVED_EVENTS or spec.name in self.sio.handlers.get("/", {}):
            raise ValueError(f"the Socket.IO event {spec.name!r} is already taken")
        emit = self.sio.emit

        async def run(_self: SocketIOEvents, conn: Connection, data: Any) -> Payload:
            async def to_caller(event: str, payload: Payload) -> None:
                await emit(event, payload, to=conn.conn_id)

            return await spec.invoke(EventContext(conn.identity, conn.conn_id, to_caller), data)

        self.sio.on(spec.name, functools.partial(_acked(run), self))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- connect / disconnect ------------------------------------------------------------

    async def on_connect(self, sid: str, environ: Mapping[str, Any], auth: Any = None) -> None:
        if not self.relay.pipeline.accepting:
            raise socketio.exceptions.ConnectionRefusedError(
                "server_shutdown",
                {"code": ErrorCode.SERVER_SHUTDOWN.value, "message": "The server is stopping."},
            )
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
        try:
            identity = await self.authenticator.authenticate(token)
        except AuthError as exc:
            self.relay.observer.refused(TRANSPORT, exc.code)
            log_refusal(environ.get("asgi.scope"), exc.code, exc.message, TRANSPORT)
            raise socketio.exceptions.ConnectionRefusedError(
                "unauthorized", {"code": exc.code, "message": exc.message}
            ) from None
        if not await self.counter.acquire(identity.sub, sid):
            self.relay.observer.refused(TRANSPORT, ErrorCode.RATE_LIMITED.value)
            log_refusal(
                environ.get("asgi.scope"), "rate_limited", "too many connections", TRANSPORT
            )
            raise socketio.exceptions.ConnectionRefusedError(
                "rate_limited",
                {"code": ErrorCode.RATE_LIMITED.value, "message": "Too many connections."},
            )
        conn = Connection(sid, identity, TRANSPORT)
        self.connections.add(conn)
        conn.schedule_expiry(self._expired)
        if self.rooms is not None:
            await self.rooms.connected(conn)
        session = {"sid": sid, "user": identity.user, **self.session_info()}
        self._spawn(self.sio.emit("session", session, to=sid))

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        conn = self.connections.pop(sid)
        if conn is None:
            return
        deliberate = reason in (
            self.sio.reason.CLIENT_DISCONNECT,
            self.sio.reason.SERVER_DISCONNECT,
        )
        self.relay.connection_closed(conn, deliberate=deliberate)
        await self.counter.release(conn.identity.sub, sid)
        if self.rooms is not None:
            await self.rooms.disconnected(conn)

    def _expired(self, conn: Connection) -> None:
        self._spawn(self._close_expired(conn))

    async def _close_expired(self, conn: Connection) -> None:
        error = ProtocolError(ErrorCode.TOKEN_EXPIRED, "The token has expired.").to_wire()
        await self.sio.emit("error", error, to=conn.conn_id)
        await asyncio.sleep(0.2)
        await self.sio.disconnect(conn.conn_id)

    # -- events ------------------------------------------------------------------------

    @_acked
    async def on_chat(self, conn: Connection, data: Any) -> Payload:
        try:
            target = data.get("room") if isinstance(data, dict) else None
            room = target if isinstance(target, str) and target else None
            sink = SioSink(self.sio, room_channel(room) if room else conn.conn_id)
            request_id = await self.relay.chat(conn, data, sink)
            self.tails.forget(request_id, room)  # a new request: old replays' skips end
        except Exception as exc:
            error, event = refusal(exc, data)
            await self.sio.emit("error", event, to=conn.conn_id)
            return {"ok": False, "error": error}
        return {"ok": True, "request_id": request_id}

    @_acked
    async def on_cancel(self, conn: Connection, data: Any) -> Payload:
        await self.relay.cancel(conn, data)
        return {"ok": True}

    @_acked
    async def on_resume(self, conn: Connection, data: Any) -> Payload:
        """Replay from the log; live copies of the request skip this sid meanwhile."""
        meta, last_seq = await self.relay.find_resumable(conn, data)
        sid, request_id, room = conn.conn_id, meta.request_id, meta.room
        tails = self.tails
        tails.add(request_id, room, sid)
        emit = self.sio.emit

        async def deliver(event: str, payload: Payload) -> None:
            await emit(event, payload, to=sid, ignore_queue=True)

        self.relay.replay(
            conn, meta, last_seq, deliver, lambda: tails.finish(request_id, room, sid)
        )
        return {"ok": True}

    @_acked
    async def on_join(self, conn: Connection, data: Any) -> Payload:
        if self.rooms is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "Rooms are not enabled.")
        return await self.rooms.join(conn, data)

    @_acked
    async def on_leave(self, conn: Connection, data: Any) -> Payload:
        if self.rooms is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "Rooms are not enabled.")
        return await self.rooms.leave(conn, data)

    @_acked
    async def on_refresh(self, conn: Connection, data: Any) -> Payload:
        expires_at = await self.relay.refresh(conn, data)
        conn.schedule_expiry(self._expired)
        if self.rooms is not None:
            await self.rooms.refreshed(conn)
        return {"ok": True, "expires_at": int(expires_at)}

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
