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
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from events.core.admission import Admission, Payload, PipelineConfig, Requester, Ticket
from events.core.errors import ErrorCode, ProtocolError, to_protocol_error
from events.core.stream import StreamState
from services import log_context
from services.budget import BudgetExceeded, Meter
from services.generations import Generation, GenerationRegistry, StopReason
from services.storage.streamlog import StreamLog, StreamMeta
from services.upstream.base import Chunk, Upstream

logger = logging.getLogger(__name__)

__all__ = ["ChatPipeline", "Payload", "PipelineConfig", "RequestEnd", "Requester", "Sink"]

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
    generation_id: str | None = None  # the upstream's response id (as in ``done``)
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


@dataclass(slots=True, eq=False)
class _Run:
    """One generation while it runs: who asked, where events go, what came so far."""

    gen: Generation
    ticket: Ticket
    upstream: _EarlyStream
    sink: Sink
    on_finish: OnFinish | None
    base: Payload  # request_id (and room) of every event
    out: StreamState
    started: float  # time.monotonic() when the pipeline took the request
    accepted_at: float  # the same moment, epoch seconds
    first_event_at: float | None = None
    code: str | None = None  # the error code of an ``error`` end
    deltas: int = 0  # upstream deltas relayed (what the budget meter counted)


class ChatPipeline:
    """Runs admitted requests: one task per generation, one terminal event each."""

    def __init__(
        self,
        config: PipelineConfig,
        upstream: Upstream,
        *,
        log: StreamLog,
        registry: GenerationRegistry,
        admission: Admission,
        observer: PipelineObserver | None = None,
    ) -> None:
        self.config = config
        self.upstream = upstream
        self._log = log
        self._registry = registry
        self._admission = admission
        self._observer: PipelineObserver = observer or _NoObserver()
        self._accepting = True

    def stop_accepting(self) -> None:
        self._accepting = False

    @property
    def accepting(self) -> bool:
        """False once the server is shutting down: transports refuse new connections."""
        return self._accepting

    async def start(
        self,
        ticket: Ticket,
        room: str | None,
        body: Payload,
        sink: Sink,
        on_finish: OnFinish | None = None,
    ) -> str:
        """Send the upstream request, open the request's stream log meanwhile, and run it.

        A model takes far longer to answer than the log takes to open (a Redis round
        trip), so the request goes out first.  Nothing is relayed before the log is open:
        the run, which relays, starts after it, as before, so every event is still logged
        before it is delivered and the ``chat`` ack still goes out before the first one.
        The ticket's claims pass to the run.
        """
        if not self._accepting:
            raise ProtocolError(ErrorCode.SERVER_SHUTDOWN, "The server is not accepting requests.")
        started, accepted_at = time.monotonic(), time.time()
        who = ticket.who
        owner = who.identity.sub
        gen = Generation(ticket.key, ticket.request_id, owner, who.conn_id, room)
        cfg = self.config
        upstream = _EarlyStream(
            self.upstream.stream(
                body, gather_s=cfg.token_coalesce_s, busy_gather_s=cfg.token_coalesce_busy_s
            ),
            request_id=ticket.request_id,
            user_id=owner,
        )
        try:
            await self._log.open(StreamMeta(ticket.key, ticket.request_id, owner, room))
        except BaseException:
            await upstream.aclose()
            raise
        self._registry.add(gen)
        self._admission.settle(ticket)
        base: Payload = {"request_id": gen.request_id}
        if room is not None:
            base["room"] = room
        out = StreamState(model=body["model"], keep_text=on_finish is not None)
        run = _Run(gen, ticket, upstream, sink, on_finish, base, out, started, accepted_at)
        gen.task = asyncio.create_task(self._run(run))
        self._observer.accepted(who.transport)
        return ticket.request_id

    # -- the generation ---------------------------------------------------------------

    async def _run(self, run: _Run) -> None:
        gen = run.gen
        log_context.bind(request_id=gen.request_id, user_id=gen.owner)  # this task only
        gen.started = True
        event, payload = await self._generate(run)
        gen.ending = True  # no more stops: the terminal event must go out
        try:
            await self._end(run, event, payload)
        finally:
            self._registry.remove(gen)
            try:
                await self._admission.finished(gen.owner, run.ticket.slot)
            except Exception:
                logger.exception("releasing the stream slot of %s failed", gen.request_id)
        meter = run.ticket.meter
        if meter is not None:  # the budget hook at the end: the real usage replaces the count
            await _settle(meter, run.out.usage)
        self._report(run, event, payload)

    async def _generate(self, run: _Run) -> tuple[str, Payload]:
        """Relay the upstream's stream; the terminal event that ends it."""
        gen = run.gen
        try:
            await self._relay(run)
            return "done", self._done(run, run.out.finish_reason or "stop")
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if gen.stop_reason is None or task is None:
                raise  # not ours: let it propagate
            task.uncancel()
            if gen.stop_reason is StopReason.SHUTDOWN:
                return self._error(
                    run, ProtocolError(ErrorCode.SERVER_SHUTDOWN, "The server is stopping.")
                )
            return "done", self._done(run, "cancelled")
        except BudgetExceeded as exc:
            return self._error(
                run,
                ProtocolError(
                    ErrorCode.BUDGET_EXCEEDED,
                    "Your daily budget is spent; the answer was stopped.",
                    retry_after=exc.retry_after,
                ),
            )
        except Exception as exc:
            return self._error(run, to_protocol_error(exc))

    async def _relay(self, run: _Run) -> None:
        """Each batch's stream events: numbered, logged, then delivered.

        With a budget, each batch's deltas are counted after its events went out; once the
        budget is crossed the stream stops (``BudgetExceeded``) and the upstream request is
        closed, unless the answer has just finished: then it still ends with ``done``.
        """
        out, sink, key, meter = run.out, run.sink, run.gen.key, run.ticket.meter
        # a stop or a budget stop closes the upstream request
        async with contextlib.aclosing(run.upstream) as stream:
            if run.gen.stop_reason is not None:
                raise asyncio.CancelledError  # stopped before it began (Generation.stop)
            async for batch in stream:
                events = out.absorb(batch)
                if sink.wants_raw:
                    await sink.raw([chunk.raw for chunk in batch])
                if events:
                    if run.first_event_at is None:
                        run.first_event_at = time.monotonic()
                        self._observer.first_token(run.first_event_at - run.started)
                    for event, fields in events:
                        payload = {**run.base, "seq": out.seq, **fields}
                        out.seq += 1
                        await self._log.append(key, event, payload)
                        await sink.emit(event, payload)
                deltas = 0  # each counts as one token until the real usage comes
                for chunk in batch:
                    if chunk.content or chunk.reasoning or chunk.tool_calls:
                        deltas += 1
                run.deltas += deltas
                within = meter is None or await meter.spend(deltas)
                if not within and out.finish_reason is None and meter is not None:
                    raise BudgetExceeded(meter.retry_after())

    async def _end(self, run: _Run, event: str, payload: Payload) -> None:
        """Log the terminal event, keep a room's reply, then send the terminal event."""
        gen, out = run.gen, run.out
        try:
            await self._log.close(gen.key, event, payload)
            if run.on_finish is not None and event == "done" and out.text:
                # Before ``done`` goes out: whoever sees it and then looks finds the reply.
                try:
                    await run.on_finish(gen.request_id, "".join(out.text), out.finish_reason)
                except Exception:
                    logger.exception("on_finish of request %s failed", gen.request_id)
            await run.sink.emit(event, payload)
        except Exception:
            logger.exception("delivering the end of request %s failed", gen.request_id)

    def _report(self, run: _Run, event: str, payload: Payload) -> None:
        """Metrics and the one lifecycle line per request (accepted, first token, end)."""
        gen, out = run.gen, run.out
        outcome = "error" if event == "error" else "done"
        if event == "done" and payload["finish_reason"] == "cancelled":
            outcome = "cancelled"
        end = RequestEnd(
            request_id=gen.request_id,
            user_id=gen.owner,
            transport=run.ticket.who.transport,
            room=gen.room,
            model=out.model,
            outcome=outcome,
            finish_reason=payload.get("finish_reason"),
            code=run.code,
            tokens=out.tokens,
            usage=out.usage,
            accepted_at=run.accepted_at,
            first_token_s=None if run.first_event_at is None else run.first_event_at - run.started,
            duration_s=time.monotonic() - run.started,
            stop_reason=gen.stop_reason.value if gen.stop_reason else None,
            generation_id=out.generation_id,
            deltas=run.deltas,
        )
        self._observer.finished(end)
        logger.info("request %s %s", gen.request_id, run.code or outcome, extra=end.log_fields())

    @staticmethod
    def _error(run: _Run, error: ProtocolError) -> tuple[str, Payload]:
        run.code = error.code.value
        payload = {**run.base, **error.to_wire()}
        if run.out.seq:  # it had started streaming: what the client should have
            payload["last_seq"] = run.out.last_seq
        return "error", payload

    @staticmethod
    def _done(run: _Run, finish_reason: str) -> Payload:
        return {**run.base, **run.out.done_fields(finish_reason)}


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


class _EarlyStream:
    """An upstream stream whose request went out before its run began.

    A task of its own sends the request and reads the first batch meanwhile; iterating
    gives that batch, then the rest (read by whoever iterates).  ``aclose`` ends both.
    """

    def __init__(
        self, stream: AsyncGenerator[list[Chunk], None], *, request_id: str, user_id: str
    ) -> None:
        self._stream = stream
        self._first: asyncio.Task[list[Chunk] | None] | None = asyncio.create_task(
            self._read_first(request_id, user_id)
        )

    async def _read_first(self, request_id: str, user_id: str) -> list[Chunk] | None:
        log_context.bind(request_id=request_id, user_id=user_id)  # this task only
        try:
            return await anext(self._stream)
        except StopAsyncIteration:
            return None

    def __aiter__(self) -> _EarlyStream:
        return self

    async def __anext__(self) -> list[Chunk]:
        if self._first is None:
            batch: list[Chunk] | None = await anext(self._stream)
        else:
            batch = await self._first  # kept until it gave its batch: aclose waits for it
            self._first = None
        if batch is None:
            raise StopAsyncIteration
        return batch

    async def aclose(self) -> None:
        first, self._first = self._first, None
        if first is not None:
            first.cancel()
            await asyncio.wait([first])  # the stream is not closed while that task reads it
            if not first.cancelled():
                first.exception()  # seen: an upstream failure nobody waited for is no news
        await self._stream.aclose()
