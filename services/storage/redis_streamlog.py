"""The stream log in Redis Streams, so a client may resume on any node.

Keys (``P`` = the key prefix, ``K`` = ``stream_key(owner, request_id)``):

* ``P log:K`` — a Redis Stream; entry ``i`` of the request has the id ``0-(i+1)`` and
  fields ``e`` (event), ``d`` (payload, JSON by orjson; never pickle) and ``end`` on
  the terminal entry.  ``XADD … MAXLEN ~ max_events`` caps it.
* ``P meta:K`` — a hash: ``request_id``, ``owner``, ``room``, ``node``, ``ended``, and
  ``lazy`` ("1" while a private stream's events are kept only on its node, below).
* ``P body:K`` — a lazy stream that ended lazily: all its events as one JSON list.
* ``P rid:<request_id>`` — a sorted set of the keys with that request id (scored by
  their expiry), for ``find``/``find_in_room`` and ``forbidden`` vs ``not_found``.
* ``P nodes:<node>`` — while this node has streams, its lease: a heartbeat key with a
  ``lease_s`` TTL (``NODE_LEASE_S``), renewed every third of it.

While a stream is live its keys carry a safety TTL (``live_ttl_s``, refreshed as it
writes); when it ends they expire ``retention_s`` later.  Nothing outlives that.

Cheap appends, and why every client still gets every event exactly once
-----------------------------------------------------------------------
``append`` does not wait for Redis: it numbers the event (entry ``i`` = ``seq`` ``i``)
and queues it for the node's one writer (``services.storage.streamlog_writer``), which
gathers the queued entries of *all* this node's streams for ``STREAM_LOG_FLUSH_MS`` and
sends them as one pipeline, waits for it, then sends the next round.  A token costs a
list append; Redis sees one round trip per round, whatever the number of streams.

1. *The log is the request's events in order, without holes.*  The one writer sends
   rounds one after the other over connections that keep command order; a round holds
   each stream's entries in order, and every entry's id is its position, fixed when it
   was queued, so a stream's log grows by a prefix-closed run of ids per round (even a
   round cut short by a dying node or connection leaves each stream a prefix).  A round
   that fails is retried (entries already stored are skipped by id, stream by stream);
   if it is finally dropped, its streams are broken: later ids show the hole and a
   reader raises ``StreamLost`` rather than skip it.
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
   replay never ends before it has given every event its client missed.  The flush
   window only lets the log lag behind the live stream: no replay can end inside it,
   since it waits for the terminal entry, and a stream's first and terminal entries
   start a round at once.  The meta is written by ``open`` before the request is
   acknowledged, so a client that drops right after the ack can resume on any node.
4. If the node running a stream dies, nothing more is written — what was queued and
   not yet sent (one window, plus a round in flight) is lost, the log keeps a prefix
   of every stream — and a reader notices the missing heartbeat and raises
   ``StreamLost("orphaned")`` instead of waiting forever (invariant 6).
   ``XREAD BLOCK`` runs on its own client (``blocking``) whose read timeout is longer
   than the block, so a silent stream is never mistaken for a Redis that hangs.

Lazy private streams (``STREAM_LOG_LAZY``)
------------------------------------------
A private stream (no room) may be resumed by its owner only, and while the owner's
connection is up it gets every event live: nobody needs its log yet.  So ``open``
writes its meta as always (``find``, ``forbidden``, ``not_found`` work on every node)
with ``lazy``, and ``append`` keeps its events in this node's memory only.  They go to
the log (``materialize``: queued in order with ids 0…n-1, the stream eager and batched
from then on, and only then ``lazy`` cleared in the meta):

* when the owner's transport is lost (``events.core.relay``, a lost, not deliberate,
  disconnect), so a resume anywhere finds them;
* when anyone tails it — a ``resume`` from another connection of the owner, on any
  node (invariant 4): ``tail`` sees ``lazy`` and materializes it (this node) or asks
  its node over the node bus (``materialize``) and waits, bounded, for the meta to say
  it is done; then it reads as above, so arguments 1 to 3 hold unchanged;
* when it outgrows ``max_events``.

A stream that ends still lazy is stored by ``close`` as one value (``P body:K``, ended
set in the meta) before its live terminal goes out; a tail of it gives that value
(after ``after_seq``, the terminal always).  One command per request instead of one
``XADD`` per event.  What it gives up: if the node dies while the owner is still
connected, nothing of the stream was logged, and a resume elsewhere gets
``server_shutdown`` at once (``StreamLost("orphaned")``: the reader finds the node's
lease gone) — invariant 6 ("after what was logged of it") holds, but the events the
owner missed in flight at the crash are not recoverable as they are with the eager log.
Room streams (members on other nodes may resume them any time) are always eager.

Measured (``python -m bench --targets ours-2w,ours --scenarios paced,burst --repeat 1``,
paced 200 streams x 300 tokens, on a 2-core machine shared with other jobs, load 6-9,
so read the CPU figures as rough): before this change, one writer per stream, 21,883
``XADD`` in 26,351 Redis reads (round trips) for the run; the batched writer, 26,331
``XADD`` in 5,862 reads; lazy, no ``XADD`` at all (5,465 reads: opens, ends, heartbeats,
the bus).  Server + Redis CPU per relayed event, 2 nodes vs 1 process in the same run:
227 vs 90 us (2.5x) before, 133 vs 76 us (1.75x) batched, 101 vs 84 us (1.2x) lazy;
Redis CPU for the paced run 0.28 s, 0.14 s, 0.06 s.

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
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from services.storage.streamlog import Event, StreamLost, StreamMeta, in_room
from services.storage.streamlog_writer import (
    MAX_PENDING,
    BatchWriter,
    LogStream,
    index_of,
)

logger = logging.getLogger(__name__)

LEASE_S = 12.0  # NODE_LEASE_S
READ_COUNT = 1000
FLUSH_S = 0.005  # STREAM_LOG_FLUSH_MS
UNLAZY_TRIES = 40  # a reader asks a lazy stream's node this often, UNLAZY_PAUSE_S apart
UNLAZY_PAUSE_S = 0.5

# Add a key to the request-id index and make the index live as long as its longest member.
_INDEX_SCRIPT = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] then redis.call('PEXPIREAT', KEYS[1], top[2]) end
return 1
"""


def _meta(key: str, raw: dict[Any, Any]) -> StreamMeta | None:
    """A stream's meta from its hash as Redis returned it (empty: no such stream)."""
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
        lazy=data.get("lazy") == "1",
    )


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
        flush_s: float = FLUSH_S,
        lazy: bool = False,
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
        self._streams: dict[str, LogStream] = {}
        self._lazy = lazy
        # asks ``node`` to materialize ``key`` (the node bus); None: one node only
        self.ask_node: Callable[[str, str], Awaitable[bool]] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._writer = BatchWriter(
            redis,
            add_to_index=self._add_to_index,
            flush_s=flush_s,
            op_timeout_s=op_timeout_s,
            retention_ms=self._retention_ms,
            live_ttl_ms=self._live_ttl_ms,
            max_events=max_events,
        )

    @property
    def batches_written(self) -> int:
        """Round trips that stored events (for metrics): one per round of the node's writer."""
        return self._writer.batches_written

    @property
    def events_written(self) -> int:
        return self._writer.events_written

    # -- keys ------------------------------------------------------------------------

    def _log_key(self, key: str) -> str:
        return f"{self._prefix}log:{key}"

    def _meta_key(self, key: str) -> str:
        return f"{self._prefix}meta:{key}"

    def _rid_key(self, request_id: str) -> str:
        return f"{self._prefix}rid:{request_id}"

    def _node_key(self, node: str) -> str:
        return f"{self._prefix}nodes:{node}"

    def _body_key(self, key: str) -> str:
        return f"{self._prefix}body:{key}"

    # -- writing ---------------------------------------------------------------------

    async def open(self, meta: StreamMeta) -> None:
        key = meta.key
        old = self._streams.pop(key, None)
        if old is not None:
            await self._writer.drop(old)
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
        lazy = self._lazy and meta.room is None  # a room's members may resume it any time
        if lazy:
            fields["lazy"] = "1"
        lkey, mkey = self._log_key(key), self._meta_key(key)
        stream = LogStream(meta, lkey, mkey, kept=False, lazy=[] if lazy else None)
        self._streams[key] = stream
        try:
            async with asyncio.timeout(self._op_timeout_s), self._redis.pipeline() as pipe:
                pipe.delete(lkey, mkey, self._body_key(key))
                pipe.hset(mkey, mapping=fields)
                pipe.pexpire(mkey, self._live_ttl_ms)
                self._add_to_index(pipe, meta, self._live_ttl_ms)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            # The answer still streams live; only resuming it will not be possible.
            logger.warning(
                "stream log: Redis unavailable (%s); request %s will not be resumable",
                type(exc).__name__,
                meta.request_id,
            )
            return
        stream.kept = True

    def _add_to_index(self, pipe: Any, meta: StreamMeta, ttl_ms: int) -> None:
        """Queue on ``pipe``: index ``meta.key`` under its request id until ``ttl_ms`` from now.

        By ``EVAL`` with the script's text, not a registered ``Script``: redis-py sends a
        ``SCRIPT EXISTS`` round trip of its own before every pipeline holding one, which
        was two of a request's round trips (open and end).  Redis caches the compiled
        script by its hash, so the text costs a few hundred bytes on the wire, no more.
        """
        now_ms = int(time.time() * 1000)
        rid_key = self._rid_key(meta.request_id)
        pipe.eval(_INDEX_SCRIPT, 1, rid_key, meta.key, now_ms + ttl_ms, now_ms)

    async def append(self, key: str, event: str, payload: dict[str, Any]) -> None:
        stream = self._streams.get(key)
        if stream is None or stream.closing or not stream.kept:
            return
        if stream.lazy is not None:
            stream.lazy.append((event, payload))  # the pipeline never changes a sent payload
            if len(stream.lazy) >= self._max_events:  # too long to keep here
                self._spawn(self.materialize(key))
            return
        self._writer.add(stream, event, orjson.dumps(payload), False)
        full = len(stream.pending) >= MAX_PENDING and not stream.broken
        # Redis is slower than the upstream: wait, a while
        if full and not await self._writer.wait_drained(stream):
            self._writer.break_stream(stream)

    async def close(self, key: str, event: str, payload: dict[str, Any]) -> None:
        """Queue the terminal event and wait until it (and all before it) is stored.

        The wait is bounded: a Redis that hangs must not hold back the live terminal.
        The terminal entry starts a round at once (no flush window).
        """
        stream = self._streams.get(key)
        if stream is None or stream.closing:
            return
        stream.closing = True
        try:
            if stream.kept and stream.lazy is not None:
                await self._store_body(stream, [*stream.lazy, (event, payload)])
            elif stream.kept:
                self._writer.add(stream, event, orjson.dumps(payload), True)
                async with asyncio.timeout(2 * self._op_timeout_s):
                    await stream.ended.wait()
        except TimeoutError:
            logger.warning("stream log: the end of request %s is not stored", key)
        finally:
            stream.ended.set()
            if self._streams.get(key) is stream:
                del self._streams[key]

    async def _store_body(self, stream: LogStream, events: list[Event]) -> None:
        """A lazy stream's end: all its events as one value, for a resume after it ended."""
        ttl_ms = self._retention_ms
        body = orjson.dumps(events)
        try:
            async with (
                asyncio.timeout(self._op_timeout_s),
                self._redis.pipeline(transaction=False) as pipe,
            ):
                pipe.set(self._body_key(stream.meta.key), body, px=ttl_ms)
                pipe.hset(stream.meta_key, "ended", "1")
                pipe.pexpire(stream.meta_key, ttl_ms)
                self._add_to_index(pipe, stream.meta, ttl_ms)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning(
                "stream log: the end of request %s is not stored (%s)",
                stream.meta.request_id,
                type(exc).__name__,
            )
            return
        self._writer.batches_written += 1
        self._writer.events_written += len(events)

    async def materialize(self, key: str) -> bool:
        """Write a lazy stream of this node to the log and keep it there from now on.

        ``True`` when the log (or, for a lazy stream that ended, its body) has it or soon
        will; ``False`` when this node does not run ``key``.
        """
        stream = self._streams.get(key)
        if stream is None:
            return False
        if stream.closing:  # a lazy end is writing its body: let it finish
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2 * self._op_timeout_s):
                    await stream.ended.wait()
            return True
        events, stream.lazy = stream.lazy, None
        if events is None:
            return True  # eager already
        for event, payload in events:  # ids 0…n-1, in order, before any later append
            self._writer.add(stream, event, orjson.dumps(payload), False)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self._op_timeout_s):
                await self._redis.hset(stream.meta_key, "lazy", "0")
        return True

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        return _meta(key, raw)

    async def find(self, request_id: str) -> list[StreamMeta]:
        """The streams of ``request_id``: its index, then their metas in one round trip."""
        async with asyncio.timeout(self._op_timeout_s):
            found = await self._redis.zrange(self._rid_key(request_id), 0, -1)
        keys = [_text(key) for key in found]
        if not keys:
            return []
        async with (
            asyncio.timeout(self._op_timeout_s),
            self._redis.pipeline(transaction=False) as pipe,
        ):
            for key in keys:
                pipe.hgetall(self._meta_key(key))
            raws = await pipe.execute()
        metas = (_meta(key, raw) for key, raw in zip(keys, raws, strict=True))
        return [m for m in metas if m is not None and m.request_id == request_id]

    async def find_in_room(self, room: str, request_id: str) -> StreamMeta | None:
        return in_room(await self.find(request_id), room)

    async def retained_from(self, key: str) -> int:
        async with asyncio.timeout(self._op_timeout_s):
            first = await self._redis.xrange(self._log_key(key), count=1)
        return index_of(first[0][0]) if first else 0

    async def tail(self, key: str, after_seq: int) -> AsyncIterator[Event]:
        lkey = self._log_key(key)
        position = max(after_seq + 1, 0)  # deliver entries from this index on…
        meta = await self.meta(key)
        if meta is not None and meta.lazy:
            meta = await self._unlazy(meta)
            if meta.lazy:  # it ended lazily: its body holds it all
                for event in await self._body(key, position):
                    yield event
                return
        # …and read from here: never past the terminal entry, which is given in any case
        cursor = 0  # (an empty stream: from its start)
        async with asyncio.timeout(self._op_timeout_s):
            last: Any = await self._redis.xrevrange(lkey, count=1)
        for entry_id, fields in last or ():
            ended = _field(fields, "end") is not None
            cursor = min(position, index_of(entry_id) + (0 if ended else 1))
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
                index = index_of(entry_id)
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

    async def _unlazy(self, meta: StreamMeta) -> StreamMeta:
        """Have a lazy stream's node write it to the log; its meta once it is there
        (``lazy`` still set: it ended lazily, its body holds it)."""
        for _ in range(UNLAZY_TRIES):
            if meta.ended or not meta.lazy:
                return meta
            if meta.node == self.node_id:
                await self.materialize(meta.key)
            elif meta.node is not None and self.ask_node is not None:
                await self.ask_node(meta.node, meta.key)
            again = await self.meta(meta.key)
            if again is None:
                raise StreamLost("expired")
            meta = again
            if meta.lazy and not meta.ended:
                if meta.node is None or not await self.node_alive(meta.node):
                    raise StreamLost("orphaned")  # it died with the events in its memory
                await asyncio.sleep(UNLAZY_PAUSE_S)
        raise StreamLost("orphaned")

    async def _body(self, key: str, position: int) -> list[Event]:
        async with asyncio.timeout(self._op_timeout_s):
            raw = await self._redis.get(self._body_key(key))
        if raw is None:
            raise StreamLost("expired")
        events = [(str(e), p) for e, p in orjson.loads(raw)]
        last = len(events) - 1
        return [event for i, event in enumerate(events) if i >= position or i == last]

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
        for task in list(self._tasks):
            task.cancel()
        await self._writer.aclose(timeout_s=2)  # let queued events reach Redis, briefly
        self._streams.clear()
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
