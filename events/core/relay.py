"""What both transports do for a client, once: chat, cancel, resume, refresh.

The transports translate frames into calls here and results into frames; nothing
in this module knows about Socket.IO or WebSockets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from auth.tokens import AuthError, TokenVerifier
from events.core.admission import Admission, Payload, Requester, claimed_request_id, parse
from events.core.connections import Connection
from events.core.errors import ErrorCode, ProtocolError, to_protocol_error
from events.core.models import CancelRequest, ChatRequest, RefreshRequest, ResumeRequest
from events.core.pipeline import ChatPipeline, OnFinish, Sink
from services.generations import GenerationRegistry, StopReason
from services.storage import UNAVAILABLE_ERRORS
from services.storage.bus import LocalBus, NodeBus
from services.storage.streamlog import StreamLog, StreamLost, StreamMeta, stream_key

logger = logging.getLogger(__name__)

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
    if isinstance(exc, ProtocolError):
        return exc.code.value
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return ErrorCode.UNAVAILABLE.value
    return ErrorCode.INTERNAL.value


class Relay:
    def __init__(
        self,
        pipeline: ChatPipeline,
        admission: Admission,
        log: StreamLog,
        registry: GenerationRegistry,
        verifier: TokenVerifier,
        *,
        resume_grace_s: float,
        observer: RelayObserver | None = None,
        bus: NodeBus | None = None,
    ) -> None:
        self.observer: RelayObserver = observer or _NoObserver()
        self.pipeline = pipeline
        self.admission = admission
        self.log = log
        self.registry = registry
        self.verifier = verifier
        self.resume_grace_s = resume_grace_s
        self.bus: NodeBus = bus or LocalBus()
        self.room_hook: ChatHook | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # conn_id -> stream key -> the replay feeding that connection from the log
        self._replays: dict[str, dict[str, asyncio.Task[None]]] = {}
        # conn_id -> stream key -> node: generations on other nodes this connection resumed
        self._remote: dict[str, dict[str, str]] = {}

    @property
    def node_id(self) -> str:
        return self.bus.node_id

    async def start(self) -> None:
        """Take commands from other nodes (cancel, attach…) for generations running here."""
        await self.bus.start(self._command)

    async def chat(
        self,
        conn: Connection,
        data: Any,
        sink: Sink,
        size: int | None = None,
        *,
        rooms: bool = True,
    ) -> str:
        """Admit a ``chat`` payload and start it; its ``request_id``, or ``ProtocolError``.

        ``size``: the frame's size when the transport knows it; ``rooms``: whether the
        transport offers rooms (else ``room`` is ``invalid_payload``).
        """
        try:
            return await self._chat(conn, data, sink, size, rooms)
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

    async def _chat(
        self, conn: Connection, data: Any, sink: Sink, size: int | None, rooms: bool
    ) -> str:
        admission = self.admission
        req = admission.validate(data, size, rooms=rooms)
        if not self.pipeline.accepting:  # before any claim (a rate-limit hit is one)
            raise ProtocolError(ErrorCode.SERVER_SHUTDOWN, "The server is not accepting requests.")
        admission.check_room(req, conn.rooms.__contains__)
        ticket = await admission.claim(Requester(conn.identity, conn.conn_id, conn.transport), req)
        try:
            messages: list[Payload] | None = None
            on_finish: OnFinish | None = None
            if req.room is not None and self.room_hook is not None:
                messages, on_finish = await self.room_hook(conn, req)
            body = admission.upstream_body(data, conn.identity.sub, messages)
            request_id = await self.pipeline.start(ticket, req.room, body, sink, on_finish)
        except BaseException:
            if not ticket.settled:
                await admission.release(ticket)
            raise
        if conn.closed:  # the connection went away while the request was being accepted
            self.connection_closed(conn, deliberate=conn.closed_deliberately)
        return request_id

    async def cancel(self, conn: Connection, data: Any) -> None:
        """Stop one's own request, on this node or, via the bus, on the node running it."""
        req = parse(CancelRequest, data)
        key = stream_key(conn.identity.sub, req.request_id)
        gen = self.registry.get(key)
        if gen is not None:
            if gen.stop(StopReason.CANCEL):
                return
        else:
            meta = await self.log.meta(key)
            if (
                meta is not None
                and not meta.ended
                and meta.node is not None
                and meta.node != self.node_id
                and await self.bus.send(meta.node, "cancel", key)
            ):
                return
        raise ProtocolError(ErrorCode.NOT_FOUND, "No such request in flight.")

    def connection_closed(self, conn: Connection, *, deliberate: bool) -> None:
        """Deliberate: stop its generations now.  Lost: keep them for the grace period."""
        conn.closed = True
        conn.closed_deliberately = deliberate
        for task in self._replays.pop(conn.conn_id, {}).values():
            task.cancel()
        if deliberate:
            self.registry.stop_connection(conn.conn_id, StopReason.DISCONNECT)
        else:
            for gen in self.registry.for_connection(conn.conn_id):
                if gen.room is None:  # a lazily kept stream goes to the log now
                    self._spawn(self.log.materialize(gen.key))
            self.registry.detach_connection(conn.conn_id, self.resume_grace_s)
        command = "disconnect" if deliberate else "detach"
        for key, node in self._remote.pop(conn.conn_id, {}).items():
            self._spawn(self.bus.send(node, command, key))

    async def _command(self, command: str, key: str) -> bool:
        """A command from another node for a generation of ours."""
        if command == "materialize":  # a reader elsewhere wants a lazily kept stream
            return await self.log.materialize(key)
        gen = self.registry.get(key)
        if gen is None:
            return False
        if command == "cancel":
            return gen.stop(StopReason.CANCEL)
        if command == "attach":  # its owner resumed it on another node
            self.registry.attach(gen, None)
            return True
        if gen.conn_id is not None:
            return False  # resumed here since: this node's connection decides
        if command == "disconnect":
            return gen.room is None and gen.stop(StopReason.DISCONNECT)
        if command == "detach":
            self.registry.detach(gen, self.resume_grace_s)
            return True
        return False

    async def find_resumable(self, conn: Connection, data: Any) -> tuple[StreamMeta, int]:
        """Check a ``resume``: the stream, whether this user may have it, the replay start.

        The owner's resume also tells the generation it is wanted again (stops its
        grace timer, here or on the node running it).
        """
        try:
            found = await self._find_resumable(conn, data)
        except Exception as exc:
            self.observer.resumed(conn.transport, _code(exc))
            raise
        self.observer.resumed(conn.transport, "ok")
        return found

    async def _find_resumable(self, conn: Connection, data: Any) -> tuple[StreamMeta, int]:
        req = parse(ResumeRequest, data)
        sub = conn.identity.sub
        meta = await self.log.meta(stream_key(sub, req.request_id))
        if meta is None:
            others = await self.log.find(req.request_id)
            meta = next((m for m in others if m.room is not None and m.room in conn.rooms), None)
            if meta is None:
                if others:
                    raise ProtocolError(ErrorCode.FORBIDDEN, "That request is not yours.")
                raise ProtocolError(ErrorCode.NOT_FOUND, "No such request, or it has expired.")
        if req.last_seq + 1 < await self.log.retained_from(meta.key):
            raise ProtocolError(
                ErrorCode.NOT_FOUND, "The tokens after last_seq are no longer kept."
            )
        if meta.owner == sub and not meta.ended:
            await self._attach(conn, meta)
        return meta, req.last_seq

    async def _attach(self, conn: Connection, meta: StreamMeta) -> None:
        gen = self.registry.get(meta.key)
        if gen is not None:
            self.registry.attach(gen, conn.conn_id)
        elif meta.node is not None and meta.node != self.node_id and not conn.closed:
            self._remote.setdefault(conn.conn_id, {})[meta.key] = meta.node
            await self.bus.send(meta.node, "attach", meta.key)

    def replay(
        self,
        conn: Connection,
        meta: StreamMeta,
        last_seq: int,
        deliver: Callable[[str, Payload], Awaitable[None]],
        done: Callable[[], None] | None = None,
    ) -> None:
        """Feed a resumed client from the log: the tail after ``last_seq``, then live.

        One replay per connection and request: a second ``resume`` replaces the first.
        A stream the log cannot finish ends with an ``error`` event, never a silent gap.
        """

        async def run() -> None:
            seen = last_seq  # the client has every stream event up to this seq
            try:
                async for event, payload in self.log.tail(meta.key, last_seq):
                    await deliver(event, payload)
                    seq = payload.get("seq")
                    if isinstance(seq, int):
                        seen = seq
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, StreamLost):
                    logger.warning("replay of %s: stream %s", meta.request_id, exc.reason)
                else:
                    logger.exception("replay of %s failed", meta.request_id)
                await deliver("error", self._lost_event(meta, exc, seen))
            finally:
                if self._replays.get(conn.conn_id, {}).get(meta.key) is task:
                    del self._replays[conn.conn_id][meta.key]
                    if not self._replays[conn.conn_id]:
                        del self._replays[conn.conn_id]
                if done is not None:
                    done()

        if conn.closed:
            if done is not None:
                done()
            return
        task = asyncio.create_task(run())
        previous = self._replays.setdefault(conn.conn_id, {}).get(meta.key)
        self._replays[conn.conn_id][meta.key] = task
        if previous is not None:
            previous.cancel()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _lost_event(meta: StreamMeta, exc: Exception, last_seq: int) -> Payload:
        if isinstance(exc, StreamLost) and exc.reason == "orphaned":
            error = ProtocolError(ErrorCode.SERVER_SHUTDOWN, "The server running it stopped.")
        elif isinstance(exc, StreamLost):
            error = ProtocolError(ErrorCode.NOT_FOUND, "The rest of the stream is not kept.")
        else:
            error = to_protocol_error(exc)  # Redis out: `unavailable`; a bug: `internal`
        event: Payload = {"request_id": meta.request_id, **error.to_wire()}
        if last_seq >= 0:
            event["last_seq"] = last_seq
        if meta.room is not None:
            event["room"] = meta.room
        return event

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def refresh(self, conn: Connection, data: Any) -> float:
        req = parse(RefreshRequest, data)
        try:
            identity = await self.verifier.verify(req.token)
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
        await self.bus.aclose()
