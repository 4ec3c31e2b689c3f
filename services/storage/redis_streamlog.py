"""The stream log in Redis Streams, so a client may resume on any node.

Keys (``P`` = the key prefix, ``K`` = ``stream_key(owner, request_id)``):

* ``P log:K`` — a Redis Stream; entry ``i`` of the request has the id ``0-(i+1)`` and
  fields ``e`` (event), ``d`` (payload, JSON by orjson; never pickle) and ``end`` on
  the terminal entry.  ``XADD … MAXLEN ~ max_events`` caps it.
* ``P meta:K`` — a hash: ``request_id``, ``owner``, ``room``, ``node``, ``ended``.
* ``P rid:<request_id>`` — a sorted set of the keys with that request id (scored by
  their expiry), for ``find``/``find_in_room`` and ``forbidden`` vs ``not_found``.
* ``P nodes:<node>`` — while this node has streams, its lease: a heartbeat key with a
  ``lease_s`` TTL (``NODE_LEASE_S``), renewed every third of it.

While a stream is live its keys carry a safety TTL (``live_ttl_s``, refreshed as it
writes); when it ends they expire ``retention_s`` later.  Nothing outlives that.

Cheap appends, and why every client still gets every event exactly once
-----------------------------------------------------------------------
``append`` does not wait for Redis: it numbers the event (entry ``i`` = ``seq`` ``i``)
and queues it for the stream's one writer task, which sends whatever has queued as one
pipeline, waits for it, then sends the next.  A token costs a list append; Redis sees
one round trip per batch (as many tokens as arrived during the previous round trip).

1. *The log is the request's events in order, without holes.*  One writer per stream
   writes batches one after the other over connections that keep command order, and
   every entry's id is its position, fixed when it was queued.  A batch that fails is
   retried (entries already stored are skipped by id); if it is finally dropped, later
   ids show the hole and a reader raises ``StreamLost`` rather than skip it.
2. *A reader gives each entry once, in order.*  ``tail(after_seq)`` reads from id
   ``0-(after_seq+2)`` and remembers the position it reached; ids are positions, so a
   late write can never be delivered twice or out of order (``XREAD`` only returns ids
   after the last one read).  It stops after the entry marked ``end``.
3. *The log holds an event before any client can miss it.*  A client misses live
   events in two ways only: its transport is gone, or its node skips it because it
   is being fed from the log (``events.core.tails``).  In both cases its only source is
   its replay, which waits on the log until the terminal entry — so "before" means
   "before that replay ends".  Every event is queued before it is emitted live, the
   writer flushes in order, and ``close`` waits until the terminal entry (and so every
   earlier one) is stored before the live terminal is emitted and before the request
   is forgotten.  A resume after ``done`` therefore finds the whole stream, and a
   replay never ends before it has given every event its client missed.  The meta is
   written by ``open`` before the request is acknowledged, so a client that drops
   right after the ack can resume on any node.
4. If the node running a stream dies, nothing more is written: a reader notices the
   missing heartbeat and raises ``StreamLost("orphaned")`` instead of waiting forever.
   ``XREAD BLOCK`` runs on its own client (``blocking``) whose read timeout is longer
   than the block, so a silent stream is never mistaken for a Redis that hangs.

When Redis fails the live stream goes on regardless (every call has a timeout, and
``close`` waits for the writer a bounded time): a stream opened while Redis is out is
simply not resumable; one whose writes fail is kept no further, but its terminal entry
is still tried, so a reader sees the hole and raises ``StreamLost`` — a resumed client
then gets an ``error`` event, never text with a piece missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from services.storage.streamlog import Event, StreamLost, StreamMeta, in_room

logger = logging.getLogger(__name__)

LEASE_S = 12.0  # NODE_LEASE_S
READ_COUNT = 1000
WRITE_ATTEMPTS = 2  # the client already retries a dropped connection once
MAX_PENDING = 2000  # queued events per stream before append waits for the writer

# Add a key to the request-id index and make the index live as long as its longest member.
_INDEX_SCRIPT = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] then redis.call('PEXPIREAT', KEYS[1], top[2]) end
return 1
"""


def _entry_id(index: int) -> str:
    return f"0-{index + 1}"


def _index_of(entry_id: Any) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return int(text.partition("-")[2]) - 1


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field(fields: dict[Any, Any], name: str) -> Any:
    value = fields.get(name.encode())
    return fields.get(name) if value is None else value


def _entries(response: Any) -> list[tuple[Any, dict[Any, Any]]]:
    """The entries of an ``XREAD`` reply on one stream (RESP2 list or RESP3 map)."""
    if not response:
        return []
    if isinstance(response, dict):
        return [entry for entries in response.values() for entry in entries[0]]
    return list(response[0][1])


@dataclass(eq=False)
class _Writer:
    meta: StreamMeta
    pending: list[tuple[int, str, bytes, bool]] = field(default_factory=list)
    next_index: int = 0
    closing: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    refreshed_at: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None  # None: Redis was out at open, nothing is kept
    broken: bool = False  # a write failed: only the terminal entry is still tried


class RedisStreamLog:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        node_id: str,
        retention_s: float,
        live_ttl_s: float,
        max_events: int = 100_000,
        block_s: float = 5.0,
        op_timeout_s: float = 5.0,
        lease_s: float = LEASE_S,
        blocking: aioredis.Redis | None = None,
    ) -> None:
        self._redis = redis
        self._blocking = blocking or redis  # XREAD BLOCK: reads may take block_s
        self._prefix = prefix
        self.node_id = node_id
        self._retention_ms = max(int(retention_s * 1000), 1)
        self._live_ttl_ms = max(int(live_ttl_s * 1000), self._retention_ms)
        self._max_events = max_events
        self._block_ms = max(int(block_s * 1000), 1)
        self._op_timeout_s = op_timeout_s
        self.lease_s = lease_s
        self._writers: dict[str, _Writer] = {}
        self.batches_written = 0  # round trips that stored events (for metrics)
        self.events_written = 0
        self._heartbeat: asyncio.Task[None] | None = None
        self._index = redis.register_script(_INDEX_SCRIPT)

    # -- keys ------------------------------------------------------------------------

    def _log_key(self, key: str) -> str:
        return f"{self._prefix}log:{key}"

    def _meta_key(self, key: str) -> str:
        return f"{self._prefix}meta:{key}"

    def _rid_key(self, request_id: str) -> str:
        return f"{self._prefix}rid:{request_id}"

    def _node_key(self, node: str) -> str:
        return f"{self._prefix}nodes:{node}"

    # -- writing ---------------------------------------------------------------------

    async def open(self, meta: StreamMeta) -> None:
        key = meta.key
        old = self._writers.pop(key, None)
        if old is not None and old.task is not None:
            old.task.cancel()
        if self._heartbeat is None:
            await self._beat()
            self._heartbeat = asyncio.create_task(self._heartbeats())
        fields: dict[FieldT, EncodableT] = {
            "request_id": meta.request_id,
            "owner": meta.owner,
            "room": meta.room or "",
            "node": self.node_id,
            "ended": "0",
        }
        mkey = self._meta_key(key)
        writer = _Writer(meta)
        self._writers[key] = writer
        try:
            async with asyncio.timeout(self._op_timeout_s), self._redis.pipeline() as pipe:
                pipe.delete(self._log_key(key), mkey)
                pipe.hset(mkey, mapping=fields)
                pipe.pexpire(mkey, self._live_ttl_ms)
                await self._add_to_index(pipe, meta, self._live_ttl_ms)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            # The answer still streams live; only resuming it will not be possible.
            logger.warning(
                "stream log: Redis unavailable (%s); request %s will not be resumable",
                type(exc).__name__,
                meta.request_id,
            )
            return
        writer.task = asyncio.create_task(self._write(writer))

    async def _add_to_index(self, pipe: Any, meta: StreamMeta, ttl_ms: int) -> None:
        """Queue on ``pipe``: index ``meta.key`` under its request id until ``ttl_ms`` from now."""
        now_ms = int(time.time() * 1000)
        await self._index(
            keys=[self._rid_key(meta.request_id)],
            args=[meta.key, now_ms + ttl_ms, now_ms],
            client=pipe,
        )

    async def append(self, key: str, event: str, payload: dict[str, Any]) -> None:
        writer = self._writers.get(key)
        if writer is None or writer.closing or writer.task is None:
            return
        writer.pending.append((writer.next_index, event, orjson.dumps(payload), False))
        writer.next_index += 1
        writer.wake.set()
        if len(writer.pending) >= MAX_PENDING and not writer.broken:
            writer.drained.clear()  # Redis is slower than the upstream: wait, a while
            try:
                await asyncio.wait_for(writer.drained.wait(), self._op_timeout_s)
            except TimeoutError:
                self._break(writer)

    async def close(self, key: str, event: str, payload: dict[str, Any]) -> None:
        """Queue the terminal event and wait until it (and all before it) is stored.

        The wait is bounded: a Redis that hangs must not hold back the live terminal.
        """
        writer = self._writers.get(key)
        if writer is None or writer.closing:
            return
        writer.pending.append((writer.next_index, event, orjson.dumps(payload), True))
        writer.next_index += 1
        writer.closing = True
        writer.wake.set()
        try:
            if writer.task is not None:
                await asyncio.wait_for(asyncio.shield(writer.task), 2 * self._op_timeout_s)
        except TimeoutError:
            logger.warning("stream log: the end of request %s is not stored", key)
        finally:
            if self._writers.get(key) is writer:
                del self._writers[key]

    def _break(self, writer: _Writer) -> None:
        if not writer.broken:
            writer.broken = True
            writer.pending = [entry for entry in writer.pending if entry[3]]
            logger.error(
                "stream log: Redis failed; the rest of request %s is not kept (a resume "
                "of it ends with an error)",
                writer.meta.request_id,
            )

    async def _write(self, writer: _Writer) -> None:
        while True:
            await writer.wake.wait()
            writer.wake.clear()
            batch, writer.pending = writer.pending, []
            if writer.broken:  # only the terminal entry: readers see the gap before it
                batch = [entry for entry in batch if entry[3]]
            if batch and not await self._flush(writer, batch):
                self._break(writer)
            writer.drained.set()
            if writer.closing and not writer.pending:
                return

    async def _flush(self, writer: _Writer, batch: list[tuple[int, str, bytes, bool]]) -> bool:
        """Store ``batch`` (in order, after what is stored); ``False`` if Redis failed."""
        ended = batch[-1][3]
        now = time.monotonic()
        refresh = ended or now - writer.refreshed_at > self._live_ttl_ms / 4000
        for attempt in range(1 if writer.broken else WRITE_ATTEMPTS):
            try:
                async with asyncio.timeout(self._op_timeout_s):
                    await self._store(writer.meta, batch, refresh=refresh, retry=attempt > 0)
            except (RedisError, OSError, TimeoutError) as exc:
                logger.warning(
                    "stream log: writing request %s failed (%s), attempt %d",
                    writer.meta.request_id,
                    type(exc).__name__,
                    attempt + 1,
                )
                continue
            if refresh:
                writer.refreshed_at = now
            self.batches_written += 1
            self.events_written += len(batch)
            return True
        return False

    async def _store(
        self,
        meta: StreamMeta,
        batch: list[tuple[int, str, bytes, bool]],
        *,
        refresh: bool,
        retry: bool,
    ) -> None:
        """One pipeline: the entries (ids = positions), then TTLs and the index as due."""
        lkey, mkey = self._log_key(meta.key), self._meta_key(meta.key)
        ended = batch[-1][3]
        ttl_ms = self._retention_ms if ended else self._live_ttl_ms
        if retry:  # part of the batch may be stored already: skip what is
            last = await self._redis.xrevrange(lkey, count=1)
            stored = _index_of(last[0][0]) if last else -1
            batch = [entry for entry in batch if entry[0] > stored]
        async with self._redis.pipeline(transaction=False) as pipe:
            for index, event, data, end in batch:
                entry: dict[FieldT, EncodableT] = {"e": event, "d": data}
                if end:
                    entry["end"] = "1"
                pipe.xadd(
                    lkey, entry, id=_entry_id(index), maxlen=self._max_events, approximate=True
                )
            if ended:
                pipe.hset(mkey, "ended", "1")
            if refresh:
                pipe.pexpire(lkey, ttl_ms)
                pipe.pexpire(mkey, ttl_ms)
                await self._add_to_index(pipe, meta, ttl_ms)
            await pipe.execute()

    async def _beat(self) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self._op_timeout_s):
                await self._redis.set(
                    self._node_key(self.node_id), "1", px=int(self.lease_s * 1000)
                )

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            await self._beat()

    async def node_alive(self, node: str) -> bool:
        """Whether ``node``'s lease is current (``False`` once it died ``lease_s`` ago)."""
        if node == self.node_id:
            return True
        async with asyncio.timeout(self._op_timeout_s):
            return bool(await self._redis.exists(self._node_key(node)))

    # -- reading ---------------------------------------------------------------------

    async def meta(self, key: str) -> StreamMeta | None:
        async with asyncio.timeout(self._op_timeout_s):
            raw = await self._redis.hgetall(self._meta_key(key))
        if not raw:
            return None
        data = {_text(k): _text(v) for k, v in raw.items()}
        return StreamMeta(
            key=key,
            request_id=data.get("request_id", ""),
            owner=data.get("owner", ""),
            room=data.get("room") or None,
            node=data.get("node") or None,
            ended=data.get("ended") == "1",
        )

    async def find(self, request_id: str) -> list[StreamMeta]:
        async with asyncio.timeout(self._op_timeout_s):
            keys = await self._redis.zrange(self._rid_key(request_id), 0, -1)
        found = []
        for key in keys:
            meta = await self.meta(_text(key))
            if meta is not None and meta.request_id == request_id:
                found.append(meta)
        return found

    async def find_in_room(self, room: str, request_id: str) -> StreamMeta | None:
        return in_room(await self.find(request_id), room)

    async def retained_from(self, key: str) -> int:
        async with asyncio.timeout(self._op_timeout_s):
            first = await self._redis.xrange(self._log_key(key), count=1)
        return _index_of(first[0][0]) if first else 0

    async def tail(self, key: str, after_seq: int) -> AsyncIterator[Event]:
        lkey = self._log_key(key)
        position = max(after_seq + 1, 0)  # deliver entries from this index on…
        # …and read from here: never past the terminal entry, which is given in any case
        cursor = 0  # (an empty stream: from its start)
        async with asyncio.timeout(self._op_timeout_s):
            last: Any = await self._redis.xrevrange(lkey, count=1)
        for entry_id, fields in last or ():
            ended = _field(fields, "end") is not None
            cursor = min(position, _index_of(entry_id) + (0 if ended else 1))
        while True:
            async with asyncio.timeout(self._block_ms / 1000 + self._op_timeout_s):
                response = await self._blocking.xread(
                    {lkey: f"0-{cursor}"}, count=READ_COUNT, block=self._block_ms
                )
            entries = _entries(response)
            if not entries:
                await self._check_alive(key)
                continue
            for entry_id, fields in entries:
                index = _index_of(entry_id)
                if index < cursor:
                    continue
                if index > cursor and index > position:
                    raise StreamLost("trimmed")  # entries we must give are missing
                cursor = index + 1
                end = _field(fields, "end") is not None
                if index >= position or end:  # the terminal entry always
                    yield _text(_field(fields, "e")), orjson.loads(_field(fields, "d"))
                if end:
                    return

    async def _check_alive(self, key: str) -> None:
        """Nothing new for a while: is the stream still there, and its node?"""
        meta = await self.meta(key)
        if meta is None:
            raise StreamLost("expired")
        if meta.ended or meta.node is None:
            return
        if not await self.node_alive(meta.node):
            raise StreamLost("orphaned")

    async def size(self) -> int:
        count = 0
        async for _key in self._redis.scan_iter(match=f"{self._prefix}meta:*", count=1000):
            count += 1
        return count

    async def aclose(self) -> None:
        tasks = [w.task for w in self._writers.values() if w.task is not None]
        if tasks:  # let queued events reach Redis, briefly
            await asyncio.wait(tasks, timeout=2)
            for task in tasks:
                task.cancel()
        self._writers.clear()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(self._op_timeout_s):
                    await self._redis.delete(self._node_key(self.node_id))
        if self._blocking is not self._redis:
            await self._blocking.aclose()
