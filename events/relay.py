"""What both transports do for a client, once: chat, cancel, resume, refresh.

The transports translate frames into calls here and results into frames; nothing
in this module knows about Socket.IO or WebSockets.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from auth.tokens import AuthError, TokenVerifier
from events.connections import Connection
from events.errors import ErrorCode, ProtocolError
from events.models import (
    REQUEST_ID_PATTERN,
    CancelRequest,
    ChatRequest,
    Inbound,
    RefreshRequest,
    ResumeRequest,
    validation_details,
)
from events.pipeline import ChatPipeline, OnFinish, Payload, Requester, Sink
from services.generations import GenerationRegistry, StopReason
from services.streamlog import StreamLog, StreamMeta, stream_key

logger = logging.getLogger(__name__)

_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)

M = TypeVar("M", bound=Inbound)

ChatHook = Callable[
    [Connection, ChatRequest], Awaitable[tuple[list[Payload] | None, OnFinish | None]]
]


class RelayObserver(Protocol):
    """Metrics hooks for what happens around requests; the default does nothing."""

    def rejected(self, transport: str, code: str) -> None: ...  # a chat not accepted
    def resumed(self, transport: str, result: str) -> None: ...  # "ok" or an error code
    def refused(self, transport: str, code: str) -> None: ...  # a connection refused


class _NoObserver:
    def rejected(self, transport: str, code: str) -> None:
        pass

    def resumed(self, transport: str, result: str) -> None:
        pass

    def refused(self, transport: str, code: str) -> None:
        pass


def _code(exc: Exception) -> str:
    return exc.code.value if isinstance(exc, ProtocolError) else ErrorCode.INTERNAL.value


def parse(model: type[M], data: Any) -> M:
    """Validate an inbound payload; ``invalid_payload`` with field details if it fails."""
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.INVALID_PAYLOAD, "The payload must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(
            ErrorCode.INVALID_PAYLOAD, "The payload is invalid.", details=validation_details(exc)
        ) from None


def claimed_request_id(data: Any) -> str | None:
    """The ``request_id`` a refused payload named, when it is a valid one."""
    if isinstance(data, dict):
        rid = data.get("request_id")
        if isinstance(rid, str) and _REQUEST_ID.match(rid):
            return rid
    return None


class Relay:
    def __init__(
        self,
        pipeline: ChatPipeline,
        log: StreamLog,
        registry: GenerationRegistry,
        verifier: TokenVerifier,
        *,
        resume_grace_s: float,
        observer: RelayObserver | None = None,
    ) -> None:
        self.observer: RelayObserver = observer or _NoObserver()
        self.pipeline = pipeline
        self.log = log
        self.registry = registry
        self.verifier = verifier
        self.resume_grace_s = resume_grace_s
        self.room_hook: ChatHook | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def chat(self, conn: Connection, data: Any, sink: Sink, size: int | None = None) -> str:
        try:
            return await self._chat(conn, data, sink, size)
        except Exception as exc:
            code = _code(exc)
            self.observer.rejected(conn.transport, code)
            request_id = claimed_request_id(data)
            logger.info(
                "request %s rejected: %s",
                request_id,
                code,
                extra={
                    "event": "request",
                    "request_id": request_id,
                    "user_id": conn.identity.sub,
                    "transport": conn.transport,
                    "outcome": "rejected",
                    "code": code,
                },
            )
            raise

    async def _chat(self, conn: Connection, data: Any, sink: Sink, size: int | None) -> str:
        req = self.pipeline.parse(data, size)
        messages: list[Payload] | None = None
        on_finish: OnFinish | None = None
        if req.room is not None:
            if req.room not in conn.rooms:
                raise ProtocolError(ErrorCode.FORBIDDEN, "Join the room before chatting in it.")
            if self.room_hook is not None:
                messages, on_finish = await self.room_hook(conn, req)
        who = Requester(conn.identity, conn.conn_id, conn.transport)
        return await self.pipeline.accept(who, req, sink, messages=messages, on_finish=on_finish)

    def cancel(self, conn: Connection, data: Any) -> None:
        req = parse(CancelRequest, data)
        gen = self.pipeline.find(conn.identity.sub, req.request_id)
        if gen is None or not gen.stop(StopReason.CANCEL):
            raise ProtocolError(ErrorCode.NOT_FOUND, "No such request in flight.")

    def connection_closed(self, conn: Connection, *, deliberate: bool) -> None:
        """Deliberate: stop its generations now.  Lost: keep them for the grace period."""
        if deliberate:
            self.registry.stop_connection(conn.conn_id, StopReason.DISCONNECT)
        else:
            self.registry.detach_connection(conn.conn_id, self.resume_grace_s)

    async def find_resumable(self, conn: Connection, data: Any) -> tuple[StreamMeta, int]:
        try:
            found = await self._find_resumable(conn, data)
        except Exception as exc:
            self.observer.resumed(conn.transport, _code(exc))
            raise
        self.observer.resumed(conn.transport, "ok")
        return found

    async def _find_resumable(self, conn: Connection, data: Any) -> tuple[StreamMeta, int]:
        req = parse(ResumeRequest, data)
        meta = await self.log.meta(stream_key(conn.identity.sub, req.request_id))
        if meta is None:
            for room in conn.rooms:
                meta = await self.log.find_in_room(room, req.request_id)
                if meta is not None:
                    break
        if meta is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "No such request, or it has expired.")
        if meta.owner != conn.identity.sub and (meta.room is None or meta.room not in conn.rooms):
            raise ProtocolError(ErrorCode.FORBIDDEN, "That request is not yours.")
        gen = self.registry.get(meta.key)
        if gen is not None and meta.owner == conn.identity.sub:
            self.registry.attach(gen, conn.conn_id)
        return meta, req.last_seq

    def replay(
        self,
        meta: StreamMeta,
        last_seq: int,
        deliver: Callable[[str, Payload], Awaitable[None]],
        done: Callable[[], None] | None = None,
    ) -> None:
        """Feed a resumed client from the log: the tail after ``last_seq``, then live."""

        async def run() -> None:
            try:
                async for event, payload in self.log.tail(meta.key, last_seq):
                    await deliver(event, payload)
            except Exception:
                logger.exception("replay of %s failed", meta.request_id)
            finally:
                if done is not None:
                    done()

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def refresh(self, conn: Connection, data: Any) -> float:
        req = parse(RefreshRequest, data)
        try:
            identity = self.verifier.verify(req.token)
        except AuthError as exc:
            raise ProtocolError(ErrorCode(exc.code), exc.message) from None
        if identity.sub != conn.identity.sub:
            raise ProtocolError(ErrorCode.FORBIDDEN, "The new token is for another user.")
        if identity.exp is None or identity.exp <= time.time():
            raise ProtocolError(ErrorCode.TOKEN_EXPIRED, "The new token has expired.")
        conn.identity = identity
        return identity.exp

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1)
