"""python-socketio's client managers, with a cheaper local emit and a kinder Redis.

Read from python-socketio 5.18.1: ``AsyncManager.emit``; ``AsyncRedisManager.emit``,
``_publish``, ``_listen``, ``_redis_listen_with_retries`` and ``_handle_emit`` (called by
``AsyncPubSubManager.emit`` and ``_thread``); ``manager.rooms`` read as
``{namespace: {room: {sid: eio_sid}}}``.

* Stream events for a client that is being fed from the stream log (after ``resume``)
  are not also delivered live to it: the managers skip such sids on this node, so a
  resumed client sees every token exactly once.  Correctness: stays.  Works for the
  in-memory manager and, on every node, for the Redis manager.  The replay itself is
  emitted with ``ignore_queue=True`` (straight to the local sid) and is not filtered.
* The Redis manager keeps a local sid's events off Redis (a sid lives on one node),
  never lets a Redis outage hold up local delivery, and recovers by itself (hardening:
  stays).  Issue 16 (correctness, not measured): a failed publish waits, in order, in
  the ``Outbox`` of pubsub_outbox.py and is retried (one given up ends its stream for
  remote members with ``unavailable``: no silent gap); every Redis call has the
  ``REDIS_TIMEOUT_S`` deadline and the shared ``Breaker``; an event arriving from another
  node passes ``remote_events`` first (events.core.orphans drops duplicates after a
  retried publish and events after a stream's end).  Keeping private events off Redis
  was measured when it was written (README, "Performance"): 13.7 s per 100k tokens with
  every event published vs 6.2 s.
* Room events for other nodes are coalesced (issue 17): ``_publish`` only queues; the
  ``Outbox``'s one task per node sends what gathered within ``PUBSUB_FLUSH_MS`` as one
  PUBLISH of a batch (pubsub_batch.py), and ``_listen`` hands a batch's messages to
  python-socketio's ``_thread`` one by one, in order (skipping this node's own batches
  undecoded).  A stream's first and terminal events go at once.  Measured with a
  two-node room script (20 rooms, a member on each node, 2 x 200 tokens 20 ms apart,
  ``TOKEN_COALESCE_MS=0``, a private Redis; medians of 3 runs on the loaded shared
  machine): PUBLISH per token 1.01 → 0.05; both nodes' CPU per 10k tokens 3.33 → 2.03 s;
  Redis CPU 0.29 → 0.15 s (the rest is the stream log); a remote member's delay behind a
  local one p50 1.2 → 5.1 ms, p99 7.9 → 15.8 ms.  The same window as a pipeline of single
  PUBLISHes: 2.58 s and 0.16 s, so batches; a 2 ms window: 2.13 s, p50 2.3 ms.
* Local delivery encodes an event once and queues it on each recipient's socket
  (``emit_here``), instead of python-socketio's task per recipient: the token path.
  Measured with ``python -m bench`` (a checkout without it as target "before", same
  run; CPU per 100k tokens spreads ±20-30% run to run on the shared 2-vCPU machine, so
  these are hints): paced 5.32 → 4.45 s (-16%, medians of 5, default settings) and
  5.13 → 4.97 s (-3%, medians of 3, ``TOKEN_COALESCE_MS=0``); burst no difference
  (0.85 vs 0.86 s); RSS none.  Kept: it never costs, and a room's event reaches every
  member without a task each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Container
from typing import Any

import orjson
import redis.asyncio as aioredis
import socketio
from engineio import packet as eio_packet

from events.core.tails import TailRegistry
from events.transport.internals import pubsub_batch
from events.transport.internals.pubsub_outbox import Outbox
from services.storage.redis_client import Breaker, redis_client

logger = logging.getLogger(__name__)

__all__ = ["MemoryManager", "RedisManager", "emit_here", "encode_event"]


def encode_event(event: str, data: Any, namespace: str) -> eio_packet.Packet | None:
    """The Engine.IO packet of a Socket.IO EVENT, or None when it needs the generic path.

    Our stream payloads are JSON objects (never binary), so the packet is one orjson
    call; anything else (tuples of arguments, bytes) goes through python-socketio.
    """
    if not isinstance(data, dict):
        return None
    try:
        body = orjson.dumps([event, data]).decode()
    except TypeError:  # bytes, non-string keys, huge integers
        return None
    prefix = "2" if namespace == "/" else f"2{namespace},"
    return eio_packet.Packet(eio_packet.MESSAGE, prefix + body)


class MemoryManager(socketio.AsyncManager):  # type: ignore[misc]
    """The in-memory manager, with a cheaper emit for the events we send most.

    python-socketio's ``emit`` runs one asyncio task per recipient and waits for all of
    them; putting a packet on an Engine.IO socket's queue never blocks, so we encode the
    packet once and hand it to each recipient's socket in turn (same order, no tasks).
    """

    def __init__(self, tails: TailRegistry) -> None:
        super().__init__()
        self.tails = tails

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        if self.tails and not kwargs.get("ignore_queue"):
            skip_sid = self.tails.skip(event, data, skip_sid)
        room = to or room
        if callback is None and await emit_here(self, event, data, namespace, room, skip_sid):
            return
        await super().emit(
            event,
            data,
            namespace,
            room=room,
            skip_sid=skip_sid,
            callback=callback,
            **kwargs,
        )


async def emit_here(
    manager: socketio.AsyncManager, event: str, data: Any, namespace: str, room: Any, skip_sid: Any
) -> bool:
    """Deliver an event to ``room``'s participants on this node: one encode, no tasks.

    False (nothing sent) when the event needs python-socketio's own path: several rooms,
    or a payload that is not a JSON object orjson can encode.
    """
    if not isinstance(room, str):
        return False
    pkt = encode_event(event, data, namespace)
    if pkt is None:
        return False
    participants = manager.rooms.get(namespace, {}).get(room)
    if not participants:
        return True
    if skip_sid is None:
        skip: Container[str] = ()
    elif isinstance(skip_sid, list):
        skip = skip_sid
    else:
        skip = (skip_sid,)
    eio = manager.server.eio
    for sid, eio_sid in list(participants.items()):
        if sid not in skip:
            await eio.send_packet(eio_sid, pkt)
    return True


class RedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """Events between nodes over Redis pub/sub (JSON; python-socketio ≥ 5.14 never pickles).

    Kinder to a Redis outage than the base class: local delivery never waits for Redis
    (every publish is queued in the ``Outbox`` and sent, coalesced, by one task; a failed
    one waits, later ones behind it, and is retried in order; one given up ends its
    stream for the other nodes with ``unavailable``), and
    the subscriber reconnects with a backoff capped at ``retry_s`` (not 60 s), so
    cross-node delivery resumes soon after Redis is back.
    """

    def __init__(
        self,
        url: str,
        tails: TailRegistry,
        channel: str = "llm-relay",
        *,
        retry_s: float = 1.0,
        timeout_s: float = 2.0,
        breaker: Breaker | None = None,
        flush_s: float = 0.0,
    ) -> None:
        super().__init__(url, channel=channel)
        self.tails = tails
        self.retry_s = retry_s
        self.timeout_s = timeout_s  # REDIS_TIMEOUT_S: a publish waits no longer
        self.breaker = breaker
        # what we publish waits here, in order, for one task to publish it (coalesced
        # over PUBSUB_FLUSH_MS); after a failure it is kept 10x REDIS_TIMEOUT_S, then given up
        self.outbox = Outbox(
            self._publish_batch,
            self._encode,
            flush_s=flush_s,
            max_age_s=10 * timeout_s,
            retry_s=retry_s,
        )
        self._own_batches = pubsub_batch.sender_prefix(self.host_id)
        self.listening = False
        # told of every event that arrives from another node; False drops it
        # (events.core.orphans: a duplicate, or after the stream's end)
        self.remote_events: Callable[[str, Any], bool] | None = None
        self._client: aioredis.Redis | None = None
        self._outage = False

    @property
    def relaying(self) -> bool:
        """Subscribed, and no publish waiting for Redis."""
        return self.listening and not self.outbox.holding

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            self._client = redis_client(
                self.redis_url, timeout_s=self.timeout_s, breaker=self.breaker
            )
        return self._client

    def _trouble(self, what: str, exc: Exception) -> None:
        if not self._outage:
            self._outage = True
            logger.warning("Redis %s failed, cross-node delivery degraded: %s", what, exc)

    def _recovered(self) -> None:
        if self._outage:
            self._outage = False
            logger.info("Redis reachable again, cross-node delivery restored")

    async def _publish(self, data: Any) -> Any:
        """Queue for the publisher task (events.transport.internals.pubsub_outbox): local
        delivery never waits for Redis, remote members never see a silent gap."""
        if isinstance(data, dict):
            self.outbox.add(data)

    def _encode(self, message: dict[str, Any]) -> bytes:
        try:
            return orjson.dumps(message)
        except TypeError:  # what orjson cannot encode: python-socketio's JSON module
            return str(self.json.dumps(message)).encode()

    async def _publish_batch(self, parts: list[bytes]) -> None:
        """One Redis command: a single message as python-socketio publishes it; several
        as one batch (pubsub_batch.py) or, with ``PUBSUB_FLUSH_MS=0``, one pipeline of
        single messages (older nodes read those)."""
        redis = self._redis()
        try:
            if len(parts) == 1:
                await redis.publish(self.channel, parts[0])
            elif self.outbox.flush_s > 0:
                await redis.publish(self.channel, pubsub_batch.pack(self.host_id, parts))
            else:
                async with redis.pipeline(transaction=False) as pipe:
                    for part in parts:
                        pipe.publish(self.channel, part)
                    await pipe.execute()
        except Exception as exc:
            self._trouble("publish", exc)
            raise
        if self.listening:
            self._recovered()

    async def _listen(self) -> AsyncIterator[Any]:
        """python-socketio's messages from the channel, a batch's one by one, in order."""
        channel = self.channel.encode()
        async for message in self._redis_listen_with_retries():
            if message.get("type") != "message" or message.get("channel") != channel:
                continue
            data = message.get("data")
            if not isinstance(data, bytes) or not data.startswith(pubsub_batch.BATCH_PREFIX):
                yield data  # a single message: python-socketio decodes it
            elif not data.startswith(self._own_batches):
                for one in pubsub_batch.unpack(data):
                    yield one

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        delay = 0.1
        while True:
            pubsub = self._redis().pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.listening = True
                self._recovered()
                delay = 0.1
                async for message in pubsub.listen():
                    yield message
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._trouble("subscription", exc)
            finally:
                self.listening = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_s)

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        target = to or room
        ns = namespace or "/"
        if (
            callback is None
            and not kwargs.get("ignore_queue")
            and isinstance(target, str)
            and target in self.rooms.get(ns, {}).get(None, ())
        ):
            # A sid lives on one node, this one: its private events need not cross Redis.
            if self.tails:
                skip_sid = self.tails.skip(event, data, skip_sid)
            if await emit_here(self, event, data, ns, target, skip_sid):
                return
            kwargs["ignore_queue"] = True
        await super().emit(
            event,
            data,
            namespace=namespace,
            room=room,
            skip_sid=skip_sid,
            callback=callback,
            to=to,
            **kwargs,
        )

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if self.remote_events is not None:
            data = message.get("data")
            if (
                isinstance(data, list)
                and len(data) == 1
                and not self.remote_events(message.get("event", ""), data[0])
            ):
                return
        if self.tails:
            message = dict(message)
            data = message.get("data")
            payload = data[0] if isinstance(data, list) and len(data) == 1 else data
            message["skip_sid"] = self.tails.skip(
                message.get("event", ""), payload, message.get("skip_sid")
            )
        data = message.get("data")
        if (
            message.get("callback") is None
            and not message.get("binary")
            and isinstance(data, list)
            and len(data) == 1
            and await emit_here(
                self,
                message.get("event", ""),
                data[0],
                message.get("namespace") or "/",
                message.get("room"),
                message.get("skip_sid"),
            )
        ):
            return
        await super()._handle_emit(message)

    async def aclose(self) -> None:
        await self.outbox.aclose(flush_timeout_s=self.timeout_s)
        task = getattr(self, "thread", None)
        if isinstance(task, asyncio.Future) and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=5)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
