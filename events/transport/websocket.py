"""Raw WebSocket transport ``/websockets/openrouter`` (PROTOCOL.md §2).

The original template's request format in, typed frames out (or the template's own
``completion`` frames with ``?format=completion``).  Same pipeline as Socket.IO.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from auth.authenticator import Authenticator
from auth.origins import OriginPolicy, log_refusal
from auth.tokens import AuthError, bearer_token
from events.core.admission import refusal
from events.core.connections import Connection, Connections
from events.core.errors import ErrorCode, ProtocolError
from events.core.pipeline import Payload
from events.core.relay import Relay
from events.core.tails import TailRegistry
from services.storage.limits import ConnectionCounter
from services.storage.streamlog import StreamMeta

logger = logging.getLogger(__name__)

TRANSPORT = "websocket"
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_RATE_LIMITED = 4429
CLOSE_SERVICE_RESTART = 1012
_DELIBERATE_CLOSE = frozenset({1000, 1001})
_DELTA_EVENTS = frozenset({"token", "reasoning", "tool_call"})
_SELF = "self"  # this socket, in its sink's TailRegistry


class WebSocketSink:
    """Frames to one raw WebSocket client; silently drops frames once it is gone."""

    __slots__ = ("_lock", "_ws", "closed", "tails", "wants_raw")

    def __init__(self, ws: WebSocket, *, completion_format: bool) -> None:
        self._ws = ws
        self._lock = asyncio.Lock()
        self.closed = False
        self.wants_raw = completion_format
        self.tails = TailRegistry()  # requests this socket is fed from the log

    async def send(self, frame: Payload) -> None:
        if self.closed:
            return
        data = orjson.dumps(frame).decode()
        async with self._lock:
            try:
                await self._ws.send_text(data)
            except Exception:
                self.closed = True

    async def emit(self, event: str, payload: Payload) -> None:
        if self.tails and self.tails.skip(event, payload, None):
            return  # a replay from the log delivers it
        if self.wants_raw and event in _DELTA_EVENTS:
            return  # the completion frames carry them
        await self.send({"type": event, **payload})

    async def raw(self, chunks: list[Payload]) -> None:
        for chunk in chunks:
            await self.send({"type": "completion", "data": chunk})


class WebSocketEndpoint:
    def __init__(
        self,
        relay: Relay,
        authenticator: Authenticator,
        origins: OriginPolicy,
        connections: Connections,
        connection_counter: ConnectionCounter,
        max_payload_bytes: int,
    ) -> None:
        self.relay = relay
        self.authenticator = authenticator
        self.origins = origins
        self.connections = connections
        self.counter = connection_counter
        self.max_payload_bytes = max_payload_bytes
        self._tasks: set[asyncio.Task[None]] = set()

    async def _refuse(self, ws: WebSocket, code: ErrorCode, message: str, close: int) -> None:
        self.relay.observer.refused(TRANSPORT, code.value)
        log_refusal(ws.scope, code.value, message, TRANSPORT)
        await ws.accept()
        error = ProtocolError(code, message).to_wire()
        await ws.send_text(orjson.dumps({"type": "error", **error}).decode())
        await ws.close(close)

    async def __call__(self, ws: WebSocket) -> None:
        if not self.relay.pipeline.accepting:
            await self._refuse(
                ws, ErrorCode.SERVER_SHUTDOWN, "The server is stopping.", CLOSE_SERVICE_RESTART
            )
            return
        if not self.origins.allows(ws.headers.get("origin"), ws.scope):
            await self._refuse(ws, ErrorCode.FORBIDDEN, "Origin not allowed.", CLOSE_FORBIDDEN)
            return
        token = bearer_token(ws.headers.get("authorization")) or ws.query_params.get("token")
        try:
            identity = await self.authenticator.authenticate(token)
        except AuthError as exc:
            await self._refuse(ws, ErrorCode(exc.code), exc.message, CLOSE_UNAUTHORIZED)
            return
        conn_id = "ws_" + secrets.token_urlsafe(12)
        if not await self.counter.acquire(identity.sub, conn_id):
            await self._refuse(
                ws, ErrorCode.RATE_LIMITED, "Too many connections.", CLOSE_RATE_LIMITED
            )
            return
        try:
            await ws.accept()
        except BaseException:
            await self.counter.release(identity.sub, conn_id)  # the client is already gone
            raise
        sink = WebSocketSink(ws, completion_format=ws.query_params.get("format") == "completion")
        conn = Connection(conn_id, identity, TRANSPORT)
        self.connections.add(conn)
        on_expired = self._expiry_handler(ws, sink)
        conn.schedule_expiry(on_expired)
        close_code = 1006
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    close_code = int(message.get("code") or 1005)
                    break
                await self._handle(conn, sink, message, on_expired)
        except WebSocketDisconnect as exc:
            close_code = exc.code
        finally:
            sink.closed = True
            self.connections.pop(conn_id)
            self.relay.connection_closed(conn, deliberate=close_code in _DELIBERATE_CLOSE)
            await self.counter.release(identity.sub, conn_id)

    def _expiry_handler(self, ws: WebSocket, sink: WebSocketSink) -> Callable[[Connection], None]:
        async def close() -> None:
            error = ProtocolError(ErrorCode.TOKEN_EXPIRED, "The token has expired.")
            await sink.send({"type": "error", **error.to_wire()})
            sink.closed = True
            with contextlib.suppress(Exception):
                await ws.close(CLOSE_UNAUTHORIZED)

        def on_expired(_conn: Connection) -> None:
            task = asyncio.ensure_future(close())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return on_expired

    def _replay(
        self, conn: Connection, sink: WebSocketSink, meta: StreamMeta, last_seq: int
    ) -> None:
        """Replay as typed frames (also with ``?format=completion``: the log keeps tokens,
        not the upstream's chunks); live frames of the request skip this socket meanwhile.
        """
        request_id = meta.request_id
        sink.tails.add(request_id, None, _SELF)

        async def deliver(event: str, payload: Payload) -> None:
            await sink.send({"type": event, **payload})

        self.relay.replay(
            conn, meta, last_seq, deliver, lambda: sink.tails.finish(request_id, None, _SELF)
        )

    async def _handle(
        self,
        conn: Connection,
        sink: WebSocketSink,
        message: Any,
        on_expired: Callable[[Connection], None],
    ) -> None:
        text = message.get("text")
        data: Any = None
        try:
            if text is None:
                raise ProtocolError(ErrorCode.INVALID_PAYLOAD, "Binary frames are not supported.")
            try:
                data = orjson.loads(text)
            except orjson.JSONDecodeError:
                raise ProtocolError(
                    ErrorCode.INVALID_PAYLOAD, "The frame is not valid JSON."
                ) from None
            kind = data.pop("type", "chat") if isinstance(data, dict) else "chat"
            if kind == "chat":
                accepted = await self.relay.chat(conn, data, sink, len(text), rooms=False)
                sink.tails.forget(accepted, None)
            elif kind == "cancel":
                await self.relay.cancel(conn, data)
            elif kind == "resume":
                meta, last_seq = await self.relay.find_resumable(conn, data)
                self._replay(conn, sink, meta, last_seq)
            elif kind == "refresh":
                expires_at = await self.relay.refresh(conn, data)
                conn.schedule_expiry(on_expired)
                await sink.send({"type": "refreshed", "expires_at": int(expires_at)})
            else:
                raise ProtocolError(
                    ErrorCode.INVALID_PAYLOAD,
                    "Unknown frame type.",
                    details=[
                        {"field": "type", "message": "expected chat, cancel, resume, refresh"}
                    ],
                )
        except Exception as exc:
            _, event = refusal(exc, data)
            await sink.send({"type": "error", **event})
