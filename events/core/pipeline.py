"""The one chat pipeline: validate, start a generation, relay tokens, end it exactly once.

Transports (Socket.IO, raw WebSocket) only translate: they parse frames, call
``ChatPipeline.accept`` and hand in a ``Sink`` that delivers events to their client.
Every event of a request is written to the stream log before it is delivered, so a
client that comes back can resume from the log without gaps or repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from pydantic import ValidationError

from auth.tokens import Identity
from events.core.errors import ErrorCode, ProtocolError, to_protocol_error
from events.core.models import ChatRequest, validation_details, within_budget
from services import log_context
from services.budget import BudgetExceeded, Budgets, Meter
from services.generations import Generation, GenerationRegistry, StopReason
from services.storage.limits import MemoryStreamCounter, RateLimiter, StreamCounter
from services.storage.streamlog import StreamLog, StreamMeta, stream_key
from services.upstream.base import Chunk, Upstream

logger = logging.getLogger(__name__)

Payload = dict[str, Any]
OnFinish = Callable[[str, str, str | None], Awaitable[None]]  # (request_id, text, finish_reason)


class Sink(Protocol):
    """Where a request's live events go (a Socket.IO room or sid, a WebSocket)."""

    wants_raw: bool

    async def emit(self, event: str, payload: Payload) -> None: ...

    async def raw(self, chunks: list[Payload]) -> None: ...


@dataclass(frozen=True, slots=True)
class RequestEnd:
    """How one accepted request went: the lifecycle log line and the metrics come from this."""

    request_id: str
    user_id: str
    transport: str
    room: str | None
    model: str | None
    outcome: str  # "done" | "cancelled" | "error"
    finish_reason: str | None  # as sent in ``done``
    code: str | None  # the error code when outcome is "error"
    tokens: int  # token events relayed
    usage: Payload | None  # as the upstream reported it
    accepted_at: float  # epoch seconds
    first_token_s: float | None  # from accept to the first token
    duration_s: float  # from accept to the terminal event
    stop_reason: str | None  # why we stopped it (cancel, disconnect, abandoned, shutdown)
    generation_id: str | None = None  # the upstream's response id
    deltas: int = 0  # upstream deltas relayed (the token estimate when no usage came)

    def log_fields(self) -> Payload:
        usage = self.usage or {}
        return {
            "event": "request",
            "request_id": self.request_id,
            "user_id": self.user_id,
            "transport": self.transport,
            "room": self.room,
            "model": self.model,
            "outcome": self.outcome,
            "finish_reason": self.finish_reason,
            "code": self.code,
            "tokens": self.tokens,
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "accepted_at": round(self.accepted_at, 3),
            "first_token_s": None if self.first_token_s is None else round(self.first_token_s, 4),
            "duration_s": round(self.duration_s, 4),
            "stop_reason": self.stop_reason,
        }


class PipelineObserver(Protocol):
    """Metrics hooks; the default does nothing."""

    def accepted(self, transport: str) -> None: ...
    def first_token(self, seconds: float) -> None: ...
    def finished(self, end: RequestEnd) -> None: ...


class _NoObserver:
    def accepted(self, transport: str) -> None:
        pass

    def first_token(self, seconds: float) -> None:
        pass

    def finished(self, end: RequestEnd) -> None:
        pass


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    default_model: str
    allowed_models: frozenset[str] = frozenset()
    max_payload_bytes: int = 1_000_000
    max_messages: int = 500
    max_message_chars: int = 100_000
    max_streams_per_connection: int = 4
    max_streams_per_user: int = 8
    token_coalesce_s: float = 0.0  # deltas within this window after the first go out as one
    max_json_values: int = 20_000  # object members + array items in one chat payload


@dataclass(frozen=True, slots=True)
class Requester:
    identity: Identity
    conn_id: str
    transport: str  # "socketio" | "websocket"


@dataclass(slots=True)
class _Outcome:
    finish_reason: str | None = None
    model: str | None = None
    usage: Payload | None = None
    tokens: int = 0
    first_token_at: float | None = None
    text: list[str] = field(default_factory=list)
    generation_id: str | None = None
    deltas: int = 0


_UPSTREAM_MESSAGE_FIELDS = ("role", "content", "name")
_UPSTREAM_FIELDS = ("models", "temperature", "top_p", "max_tokens", "stop", "seed")


def new_request_id() -> str:
    return "req_" + secrets.token_urlsafe(12).replace("-", "_")


def payload_size(data: Any) -> int:
    try:
        return len(orjson.dumps(data))
    except TypeError:
        return 0


class ChatPipeline:
    def __init__(
        self,
        config: PipelineConfig,
        *,
        log: StreamLog,
        registry: GenerationRegistry,
        rate_limiter: RateLimiter,
        streams: StreamCounter | None = None,
        observer: PipelineObserver | None = None,
        upstream: Upstream | None = None,
        budgets: Budgets | None = None,
    ) -> None:
        self.config = config
        self.budgets = budgets  # per-user daily budgets (services.budget); None: none
        self.upstream = upstream  # set at start-up, once the HTTP session exists
        self._log = log
        self._registry = registry
        self._rate = rate_limiter
        # Streams in flight per user; shared between nodes when given a Redis counter.
        self._streams: StreamCounter = streams or MemoryStreamCounter(config.max_streams_per_user)
        self._observer: PipelineObserver = observer or _NoObserver()
        self._accepting = True
        self._starting: dict[str, str] = {}  # stream key -> conn_id, while accept awaits

    # -- validation ---------------------------------------------------------------

    def parse(self, data: Any, size: int | None = None) -> ChatRequest:
        """Validate a ``chat`` payload; raise ``ProtocolError`` with the protocol's code."""
        cfg = self.config
        if not isinstance(data, dict):
            raise ProtocolError(ErrorCode.INVALID_PAYLOAD, "The payload must be a JSON object.")
        if size is None:
            size = payload_size(data)
        if size > cfg.max_payload_bytes:
            raise ProtocolError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"The payload is {size} bytes; the limit is {cfg.max_payload_bytes}.",
            )
        if not within_budget(data, cfg.max_json_values):
            raise ProtocolError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"The payload holds more than {cfg.max_json_values} JSON values.",
            )
        messages = data.get("messages")
        if isinstance(messages, list) and len(messages) > cfg.max_messages:
            raise ProtocolError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"{len(messages)} messages; the limit is {cfg.max_messages}.",
            )
        try:
            req = ChatRequest.model_validate(data)
        except ValidationError as exc:
            raise ProtocolError(
                ErrorCode.INVALID_PAYLOAD,
                "The chat request is invalid.",
                details=validation_details(exc),
            ) from None
        for index, message in enumerate(req.messages):
            content = message.content
            chars = (
                len(content)
                if isinstance(content, str)
                else sum(len(part.text or "") for part in content)
            )
            if chars > cfg.max_message_chars:
                raise ProtocolError(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"Message {index} has {chars} characters; "
                    f"the limit is {cfg.max_message_chars}.",
                    details=[{"field": f"messages.{index}.content", "message": "too long"}],
                )
        if cfg.allowed_models:
            for name in [req.model or cfg.default_model, *(req.models or [])]:
                if name not in cfg.allowed_models:
                    raise ProtocolError(
                        ErrorCode.MODEL_NOT_ALLOWED, f"The model {name!r} is not allowed."
                    )
        return req

    def upstream_body(self, req: ChatRequest, messages: list[Payload] | None = None) -> Payload:
        """What the upstream receives: only the fields it knows."""
        if messages is None:
            messages = [
                message.model_dump(include=set(_UPSTREAM_MESSAGE_FIELDS), exclude_none=True)
                for message in req.messages
            ]
        body: Payload = {"model": req.model or self.config.default_model, "messages": messages}
        for name in _UPSTREAM_FIELDS:
            value = getattr(req, name)
            if value is not None:
                body[name] = value
        return body

    # -- starting and stopping -------------------------------------------------------

    def stop_accepting(self) -> None:
        self._accepting = False

    @property
    def accepting(self) -> bool:
        """False once the server is shutting down: transports refuse new connections."""
        return self._accepting

    async def accept(
        self,
        who: Requester,
        req: ChatRequest,
        sink: Sink,
        *,
        messages: list[Payload] | None = None,
        on_finish: OnFinish | None = None,
    ) -> str:
        """Check limits, start the generation, and return its ``request_id``."""
        if not self._accepting or self.upstream is None:
            raise ProtocolError(ErrorCode.SERVER_SHUTDOWN, "The server is not accepting requests.")
        owner = who.identity.sub
        request_id = req.request_id or new_request_id()
        key = stream_key(owner, request_id)
        if self._registry.get(key) is not None or key in self._starting:
            raise ProtocolError(
                ErrorCode.INVALID_PAYLOAD,
                "A request with this request_id is still in flight.",
                details=[{"field": "request_id", "message": "already in flight"}],
            )
        cfg = self.config
        starting = sum(1 for conn_id in self._starting.values() if conn_id == who.conn_id)
        in_flight = self._registry.count_for_connection(who.conn_id) + starting
        if in_flight >= cfg.max_streams_per_connection:
            raise ProtocolError(
                ErrorCode.TOO_MANY_STREAMS,
                f"At most {cfg.max_streams_per_connection} streams per connection.",
            )
        # Counted as in flight from here, across the awaits below.
        self._starting[key] = who.conn_id
        try:
            return await self._start(who, req, sink, key, request_id, messages, on_finish)
        finally:
            del self._starting[key]

    async def _start(
        self,
        who: Requester,
        req: ChatRequest,
        sink: Sink,
        key: str,
        request_id: str,
        messages: list[Payload] | None,
        on_finish: OnFinish | None,
    ) -> str:
        owner = who.identity.sub
        slot = f"{key}:{secrets.token_hex(4)}"
        if not await self._streams.acquire(owner, slot):
            raise ProtocolError(
                ErrorCode.TOO_MANY_STREAMS,
                f"At most {self.config.max_streams_per_user} streams per user.",
            )
        try:
            meter = await self._admit(who)
            retry_after = await self._rate.hit(owner)
            if retry_after is not None:
                raise ProtocolError(
                    ErrorCode.RATE_LIMITED, "Too many requests.", retry_after=retry_after
                )
            upstream = self.upstream
            if upstream is None:
                raise ProtocolError(ErrorCode.SERVER_SHUTDOWN, "The server is not ready.")
            body = self.upstream_body(req, messages)
            gen = Generation(key, request_id, owner, who.conn_id, req.room)
            await self._log.open(StreamMeta(key, request_id, owner, req.room))
        except BaseException:
            await self._streams.release(owner, slot)
            raise
        self._registry.add(gen)
        gen.task = asyncio.create_task(
            self._run(gen, who, upstream, body, sink, on_finish, slot, meter)
        )
        self._observer.accepted(who.transport)
        return request_id

    async def _admit(self, who: Requester) -> Meter | None:
        """The budget hook before a request: refused when the day's budget is spent."""
        if self.budgets is None:
            return None
        try:
            return await self.budgets.admit(who.identity.sub, who.identity.budget)
        except BudgetExceeded as exc:
            raise ProtocolError(
                ErrorCode.BUDGET_EXCEEDED,
                "Your daily budget is spent.",
                retry_after=exc.retry_after,
            ) from None

    def find(self, owner: str, request_id: str) -> Generation | None:
        return self._registry.get(stream_key(owner, request_id))

    # -- the generation ---------------------------------------------------------------

    async def _run(
        self,
        gen: Generation,
        who: Requester,
        upstream: Upstream,
        body: Payload,
        sink: Sink,
        on_finish: OnFinish | None,
        slot: str,
        meter: Meter | None = None,
    ) -> None:
        log_context.bind(request_id=gen.request_id, user_id=gen.owner)  # this task only
        accepted_at = time.time()
        started = time.monotonic()
        gen.started = True
        out = _Outcome(model=body["model"])
        base: Payload = {"request_id": gen.request_id}
        if gen.room is not None:
            base["room"] = gen.room
        keep_text = on_finish is not None
        terminal: tuple[str, Payload]
        code: str | None = None
        try:
            if gen.stop_reason is not None:
                raise asyncio.CancelledError  # stopped before it began (Generation.stop)
            stream = upstream.stream(body, gather_s=self.config.token_coalesce_s)
            async with _closing(stream):  # a budget stop closes the upstream request now
                async for batch in stream:
                    content = self._absorb(batch, out)
                    if sink.wants_raw:
                        await sink.raw([chunk.raw for chunk in batch])
                    if content:
                        if out.first_token_at is None:
                            out.first_token_at = time.monotonic()
                            self._observer.first_token(out.first_token_at - started)
                        payload = {**base, "seq": out.tokens, "content": content}
                        out.tokens += 1
                        if keep_text:
                            out.text.append(content)
                        await self._log.append(gen.key, "token", payload)
                        await sink.emit("token", payload)
                    # The budget hook per batch: stop after this batch once it is crossed
                    # (an answer that has just finished is let through to its ``done``).
                    within = meter is None or await meter.spend(_deltas(batch))
                    if not within and out.finish_reason is None and meter is not None:
                        raise BudgetExceeded(meter.retry_after())
            terminal = ("done", self._done(base, out, out.finish_reason or "stop"))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if gen.stop_reason is None or task is None:
                raise  # not ours: let it propagate
            task.uncancel()
            if gen.stop_reason is StopReason.SHUTDOWN:
                error = ProtocolError(ErrorCode.SERVER_SHUTDOWN, "The server is stopping.")
                code = error.code.value
                terminal = ("error", {**base, **error.to_wire()})
            else:
                terminal = ("done", self._done(base, out, "cancelled"))
        except BudgetExceeded as exc:
            error = ProtocolError(
                ErrorCode.BUDGET_EXCEEDED,
                "Your daily budget is spent; the answer was stopped.",
                retry_after=exc.retry_after,
            )
            code = error.code.value
            terminal = ("error", {**base, **error.to_wire()})
        except Exception as exc:
            error = to_protocol_error(exc)
            code = error.code.value
            terminal = ("error", {**base, **error.to_wire()})
        event, payload = terminal
        outcome = "error" if event == "error" else "done"
        if event == "done" and payload["finish_reason"] == "cancelled":
            outcome = "cancelled"
        gen.ending = True  # no more stops: the terminal event must go out
        try:
            await self._log.close(gen.key, event, payload)
            if on_finish is not None and event == "done" and out.tokens:
                # Before ``done`` goes out: whoever sees it and then looks finds the reply.
                try:
                    await on_finish(gen.request_id, "".join(out.text), out.finish_reason)
                except Exception:
                    logger.exception("on_finish of request %s failed", gen.request_id)
            await sink.emit(event, payload)
        except Exception:
            logger.exception("delivering the end of request %s failed", gen.request_id)
        finally:
            self._registry.remove(gen)
            try:
                await self._streams.release(gen.owner, slot)
            except Exception:
                logger.exception("releasing the stream slot of %s failed", gen.request_id)
        end = RequestEnd(
            request_id=gen.request_id,
            user_id=gen.owner,
            transport=who.transport,
            room=gen.room,
            model=out.model,
            outcome=outcome,
            finish_reason=payload.get("finish_reason"),
            code=code,
            tokens=out.tokens,
            usage=out.usage,
            accepted_at=accepted_at,
            first_token_s=None if out.first_token_at is None else out.first_token_at - started,
            duration_s=time.monotonic() - started,
            stop_reason=gen.stop_reason.value if gen.stop_reason else None,
            generation_id=out.generation_id,
            deltas=out.deltas,
        )
        if meter is not None:  # the budget hook at the end: the real usage replaces the count
            await _settle(meter, out.usage)
        self._observer.finished(end)
        # The one lifecycle line per request (accepted, first token, end).
        logger.info("request %s %s", gen.request_id, code or outcome, extra=end.log_fields())

    @staticmethod
    def _absorb(batch: list[Chunk], out: _Outcome) -> str:
        """The batch's text; its finish reason, model and usage go into ``out``."""
        parts = []
        out.deltas += _deltas(batch)
        for chunk in batch:
            if chunk.generation_id:
                out.generation_id = chunk.generation_id
            if chunk.content:
                parts.append(chunk.content)
            if chunk.finish_reason:
                out.finish_reason = chunk.finish_reason
            if chunk.model:
                out.model = chunk.model
            if chunk.usage:
                out.usage = chunk.usage
        return "".join(parts)

    @staticmethod
    def _done(base: Payload, out: _Outcome, finish_reason: str) -> Payload:
        reported = out.usage or {}
        usage: Payload = {
            "prompt_tokens": reported.get("prompt_tokens"),
            "completion_tokens": reported.get("completion_tokens"),
            "total_tokens": reported.get("total_tokens"),
        }
        if reported.get("cost") is not None:
            usage["cost"] = reported["cost"]
        return {**base, "finish_reason": finish_reason, "model": out.model, "usage": usage}


@contextlib.asynccontextmanager
async def _closing(stream: AsyncIterator[Any]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


def _deltas(batch: list[Chunk]) -> int:
    """Upstream deltas in a batch: each counts as one token until the real usage comes."""
    return sum(1 for c in batch if c.content or c.reasoning or c.tool_calls)


async def _settle(meter: Meter, usage: Payload | None) -> None:
    reported = usage or {}
    prompt, completion, cost = (
        reported.get("prompt_tokens"),
        reported.get("completion_tokens"),
        reported.get("cost"),
    )
    try:
        await meter.settle(
            prompt if isinstance(prompt, int) else 0,
            completion if isinstance(completion, int) else None,
            float(cost) if isinstance(cost, int | float) else 0.0,
        )
    except Exception:
        logger.exception("settling the budget of %s failed", meter.user)
