"""The node's one stream-log writer: the queued entries of all its streams, one pipeline a round.

``RedisStreamLog.append`` numbers an event and hands it to ``BatchWriter.add``; it never
waits for Redis.  The writer's one task gathers what every stream of this node queued for
a short window (``STREAM_LOG_FLUSH_MS``, counted from the first entry queued since the
last round) and sends it as *one* pipeline (``transaction=False``): each stream's
``XADD``s in order, then its ``ended`` flag, TTLs and index entry when due.  It waits for
the reply, then starts the next round.  With 200 streams paced 20 ms apart that is a
round trip every few ms instead of one per stream per token batch.

The window never holds back what someone waits for: a round starts at once when it
carries a stream's first entry (a client that drops right after its first token can
resume it) or a terminal entry (``close`` waits for it); a window of 0 sends a round
as soon as the loop yields.

Failures: a round that fails (timeout, connection lost) is retried once, each stream
skipping the entries Redis already stored (read back by id).  If the retry fails too,
every stream of that round is *broken*: it keeps only its terminal entry, so a reader
sees the hole and raises ``StreamLost`` instead of skipping it.  A command that fails on
its own (the connection survived) breaks only its stream.  Streams not in the failed
round are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from services.storage.streamlog import StreamMeta

logger = logging.getLogger(__name__)

WRITE_ATTEMPTS = 2  # the client already retries a dropped connection once
MAX_PENDING = 2000  # queued events per stream before append waits for the writer

Entry = tuple[int, str, bytes, bool]  # (index = seq position, event, JSON payload, terminal)
AddToIndex = Callable[[Any, StreamMeta, int], None]  # queues on (pipeline, meta, ttl_ms)
_FAILURES = (RedisError, OSError, TimeoutError)


def entry_id(index: int) -> str:
    return f"0-{index + 1}"


def index_of(entry_id: Any) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return int(text.partition("-")[2]) - 1


@dataclass(eq=False)
class LogStream:
    """One stream's writing state on the node that runs it."""

    meta: StreamMeta
    log_key: str
    meta_key: str
    kept: bool = True  # False: Redis was out at open, nothing of it is written
    lazy: list[tuple[str, dict[str, Any]]] | None = None  # lazy: its events, in memory only
    pending: list[Entry] = field(default_factory=list)
    next_index: int = 0
    closing: bool = False
    broken: bool = False  # a write failed: only the terminal entry is still tried
    dropped: bool = False  # reopened or shut down: its queue is forgotten
    refreshed_at: float = field(default_factory=time.monotonic)
    drained: asyncio.Event | None = None  # a full queue waits for the round that takes it
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # terminal stored or given up


class BatchWriter:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        add_to_index: AddToIndex,
        flush_s: float,
        op_timeout_s: float,
        retention_ms: int,
        live_ttl_ms: int,
        max_events: int,
    ) -> None:
        self._redis = redis
        self._add_to_index = add_to_index
        self._flush_s = max(flush_s, 0.0)
        self._op_timeout_s = op_timeout_s
        self._retention_ms = retention_ms
        self._live_ttl_ms = live_ttl_ms
        self._max_events = max_events
        self._queued: dict[LogStream, None] = {}  # streams with pending entries, in order
        self._inflight: set[LogStream] = set()
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()  # a first or terminal entry: no window
        self._idle = asyncio.Event()  # nothing queued, no round in flight
        self._idle.set()
        self._round_over = asyncio.Event()  # replaced by each round, set when it ends
        self._since = 0.0  # when the first entry of the coming round was queued
        self._task: asyncio.Task[None] | None = None
        self.batches_written = 0  # round trips that stored events (for metrics)
        self.events_written = 0

    # -- queueing ----------------------------------------------------------------------

    def add(self, stream: LogStream, event: str, data: bytes, end: bool) -> None:
        """Queue the stream's next entry (its id is fixed now: its position)."""
        index = stream.next_index
        stream.next_index = index + 1
        if stream.broken and not end:
            return  # not kept: the gap before the terminal entry shows it
        stream.pending.append((index, event, data, end))
        self._queued[stream] = None
        if index == 0 or end:
            self._hurry.set()
        if not self._wake.is_set():
            self._since = time.monotonic()
            self._wake.set()
            self._idle.clear()
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def wait_drained(self, stream: LogStream) -> bool:
        """Back-pressure for a full queue; ``False`` if Redis did not take it in time."""
        if stream.drained is None:
            stream.drained = asyncio.Event()
        try:
            async with asyncio.timeout(self._op_timeout_s):
                await stream.drained.wait()
        except TimeoutError:
            return False
        return True

    async def drop(self, stream: LogStream) -> None:
        """Forget ``stream``'s queue; if a round is writing it, let that round end first."""
        stream.dropped = True
        stream.pending.clear()
        self._queued.pop(stream, None)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WRITE_ATTEMPTS * self._op_timeout_s):
                while stream in self._inflight:
                    await self._round_over.wait()

    # -- the rounds --------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if self._flush_s > 0 and not self._hurry.is_set():
                delay = self._since + self._flush_s - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._hurry.wait()
            self._wake.clear()
            self._hurry.clear()
            batches = self._take()
            if batches:
                self._inflight = {stream for stream, _ in batches}
                self._round_over = round_over = asyncio.Event()
                try:
                    await self._write(batches)
                finally:
                    self._inflight = set()
                    round_over.set()
                    for stream, batch in batches:
                        if stream.drained is not None:
                            stream.drained.set()
                            stream.drained = None
                        if batch[-1][3]:
                            stream.ended.set()
            if not self._wake.is_set():
                self._idle.set()

    def _take(self) -> list[tuple[LogStream, list[Entry]]]:
        streams = list(self._queued)
        self._queued.clear()
        batches = []
        for stream in streams:
            batch, stream.pending = stream.pending, []
            if stream.broken:  # only the terminal entry: readers see the gap before it
                batch = [entry for entry in batch if entry[3]]
            if batch and not stream.dropped:
                batches.append((stream, batch))
        return batches

    async def _write(self, batches: list[tuple[LogStream, list[Entry]]]) -> None:
        now = time.monotonic()
        stale_s = self._live_ttl_ms / 4000
        refresh = {s for s, b in batches if b[-1][3] or now - s.refreshed_at > stale_s}
        todo = batches
        for attempt in range(WRITE_ATTEMPTS):
            try:
                async with asyncio.timeout(self._op_timeout_s):
                    if attempt > 0:  # part of the round may be stored already: skip it
                        todo = await self._unstored(todo)
                    failed = await self._store(todo, refresh)
            except _FAILURES as exc:
                logger.warning(
                    "stream log: writing %d stream(s) failed (%s), attempt %d",
                    len(todo),
                    type(exc).__name__,
                    attempt + 1,
                )
                continue
            stored = 0
            for stream, batch in todo:
                if stream in failed:
                    self.break_stream(stream)
                    continue
                stored += len(batch)
                if stream in refresh:
                    stream.refreshed_at = now
            if stored:
                self.batches_written += 1
                self.events_written += stored
            return
        for stream, _batch in batches:
            self.break_stream(stream)

    async def _unstored(
        self, batches: list[tuple[LogStream, list[Entry]]]
    ) -> list[tuple[LogStream, list[Entry]]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream, _batch in batches:
                pipe.xrevrange(stream.log_key, count=1)
            tops = await pipe.execute()
        left = []
        for (stream, batch), top in zip(batches, tops, strict=True):
            stored = index_of(top[0][0]) if top else -1
            rest = [entry for entry in batch if entry[0] > stored]
            if rest:
                left.append((stream, rest))
        return left

    async def _store(
        self, batches: list[tuple[LogStream, list[Entry]]], refresh: set[LogStream]
    ) -> set[LogStream]:
        """One pipeline for the round; the streams whose own commands failed."""
        if not batches:
            return set()
        spans: list[tuple[LogStream, int]] = []  # each stream's last command + 1
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream, batch in batches:
                for index, event, data, end in batch:
                    entry: dict[FieldT, EncodableT] = {"e": event, "d": data}
                    if end:
                        entry["end"] = "1"
                    pipe.xadd(
                        stream.log_key,
                        entry,
                        id=entry_id(index),
                        maxlen=self._max_events,
                        approximate=True,
                    )
                ended = batch[-1][3]
                if ended:
                    pipe.hset(stream.meta_key, "ended", "1")
                if stream in refresh:
                    ttl_ms = self._retention_ms if ended else self._live_ttl_ms
                    pipe.pexpire(stream.log_key, ttl_ms)
                    pipe.pexpire(stream.meta_key, ttl_ms)
                    self._add_to_index(pipe, stream.meta, ttl_ms)
                spans.append((stream, len(pipe)))
            replies = await pipe.execute(raise_on_error=False)
        failed: set[LogStream] = set()
        start = 0
        for stream, end_at in spans:
            errors = [r for r in replies[start:end_at] if isinstance(r, Exception)]
            if errors:
                logger.warning(
                    "stream log: Redis refused a write of request %s (%s)",
                    stream.meta.request_id,
                    type(errors[0]).__name__,
                )
                failed.add(stream)
            start = end_at
        return failed

    def break_stream(self, stream: LogStream) -> None:
        if not stream.broken:
            stream.broken = True
            stream.pending = [entry for entry in stream.pending if entry[3]]
            logger.error(
                "stream log: Redis failed; the rest of request %s is not kept (a resume "
                "of it ends with an error)",
                stream.meta.request_id,
            )

    # -- shutdown ----------------------------------------------------------------------

    async def aclose(self, timeout_s: float = 2.0) -> None:
        """Let what is queued reach Redis, briefly; then stop."""
        if self._task is None:
            return
        self._hurry.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
