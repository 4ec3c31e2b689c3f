"""The per-user limits of ``services.storage.limits``, shared by every node through Redis.

* ``RedisSlots``: connections or streams a user holds at once — a sorted set of slot
  ids scored by a lease deadline.  The node holding a slot renews its lease while the
  slot lives, so the slots of a node that died free themselves after ``lease_s``.
* ``RedisStreamGate``: a chat request's stream slot (``RedisSlots``) and the rate limit
  — a rolling window per user, a sorted set of request times — taken by one Lua script,
  one round trip: trimmed, counted and added to atomically, with times from Redis's
  clock (the nodes' clocks do not matter).

While Redis cannot be reached, each falls back to its in-memory twin: limits then hold
per node (a warning is logged) instead of failing every request or not holding at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.storage.limits import (
    ENTERED,
    Entry,
    MemoryRateLimiter,
    MemorySlots,
    MemoryStreamGate,
)

logger = logging.getLogger(__name__)

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# The slot pieces: KEYS[1] the user's slots; ARGV[1] limit, ARGV[2] lease_ms, ARGV[3] the
# slot id.  Taking a slot one already holds is not a second one.
_SLOT_OR_FULL = """
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) and
   redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
"""
_TAKE_SLOT = """
redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
redis.call('PEXPIRE', KEYS[1], lease)
"""

# Returns 1 (taken) or 0 (full).
_ACQUIRE = _NOW_MS + _SLOT_OR_FULL + _TAKE_SLOT + "return 1\n"

# Also KEYS[2] the user's request times; ARGV[4] rate limit, ARGV[5] window_ms, ARGV[6]
# this request's member.  Returns -1 (slot taken, request counted), 0 (slots full:
# nothing counted) or the ms to wait (over the rate: no slot taken).
_ENTER = (
    _NOW_MS
    + _SLOT_OR_FULL
    + """
local window = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return math.max(tonumber(oldest[2]) + window - now, 1)
end
redis.call('ZADD', KEYS[2], now, ARGV[6])
redis.call('PEXPIRE', KEYS[2], window)
"""
    + _TAKE_SLOT
    + "return -1\n"
)

# KEYS slot sets; ARGV[1] lease_ms, ARGV[i+1] the slot id in KEYS[i].  Extends leases
# of slots still present (XX: a slot released meanwhile is not brought back).
_RENEW = (
    _NOW_MS
    + """
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', key, lease)
end
return #KEYS
"""
)


_RENEW_BATCH = 500


class _Fallback:
    """Logs a Redis outage once per minute, not once per request."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._logged_at = -60.0

    def note(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._logged_at >= 60:
            self._logged_at = now
            logger.warning(
                "Redis unreachable (%s): %s held per node until it is back",
                type(exc).__name__,
                self._what,
            )


class RedisSlots:
    """At most ``limit`` slots per user across nodes (connections or streams)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        limit: int,
        *,
        prefix: str,
        lease_s: float = 60.0,
        what: str = "slots",
    ) -> None:
        self._redis = redis
        self._limit = limit
        self._prefix = prefix
        self._lease_ms = int(lease_s * 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._held: dict[tuple[str, str], str] = {}  # (user, slot id) -> key
        self._local = MemorySlots(limit)
        self._fallback = _Fallback(what)
        self._renewer: asyncio.Task[None] | None = None

    def _key(self, user: str) -> str:
        return f"{self._prefix}:{user}"

    async def acquire(self, user: str, slot_id: str) -> bool:
        key = self._key(user)
        try:
            taken = bool(
                await self._acquire(keys=[key], args=[self._limit, self._lease_ms, slot_id])
            )
        except RedisError as exc:
            self._fallback.note(exc)
            taken = await self._local.acquire(user, slot_id)
        if taken:
            self._hold(user, slot_id)
        return taken

    def _hold(self, user: str, slot_id: str) -> None:
        """A slot taken (by ``acquire`` or ``RedisStreamGate.enter``, in Redis or in the
        local twin) is this node's: its lease is renewed while it lives, and ``release``
        or ``aclose`` give it back."""
        self._held[(user, slot_id)] = self._key(user)
        self._start_renewing()

    async def release(self, user: str, slot_id: str) -> None:
        key = self._held.pop((user, slot_id), None)
        await self._local.release(user, slot_id)
        if key is None:
            return
        try:
            await self._redis.zrem(key, slot_id)
        except RedisError as exc:
            self._fallback.note(exc)  # the lease ends it

    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        period = self._lease_ms / 3000
        while self._held:
            await asyncio.sleep(period)
            await self.renew()

    async def renew(self) -> None:
        """Extend the lease of every slot this node holds."""
        held = list(self._held.items())
        try:
            for start in range(0, len(held), _RENEW_BATCH):
                batch = held[start : start + _RENEW_BATCH]
                await self._renew(
                    keys=[key for _, key in batch],
                    args=[self._lease_ms, *(slot_id for (_, slot_id), _ in batch)],
                )
        except RedisError as exc:
            self._fallback.note(exc)

    async def aclose(self) -> None:
        """Stop renewing and give back what this node still holds."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        held, self._held = list(self._held.items()), {}
        if held:
            with contextlib.suppress(RedisError):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for (_, slot_id), key in held:
                        pipe.zrem(key, slot_id)
                    await pipe.execute()


class RedisStreamGate(RedisSlots):
    """``StreamGate`` on all nodes: the user's stream slots (at most ``streams`` at once)
    and accepted requests (at most ``rate`` in any ``window_s``), claimed by one script."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        streams: int,
        rate: int,
        prefix: str,
        lease_s: float = 60.0,
        window_s: float = 60.0,
    ) -> None:
        super().__init__(
            redis,
            streams,
            prefix=f"{prefix}:streams",
            lease_s=lease_s,
            what="stream and rate limits",
        )
        self._rate_prefix = f"{prefix}:rate"
        self._rate = rate
        self._window_ms = int(window_s * 1000)
        self._enter = redis.register_script(_ENTER)
        self._local_gate = MemoryStreamGate(self._local, MemoryRateLimiter(rate, window_s))

    async def enter(self, user: str, slot_id: str) -> Entry:
        keys = [self._key(user), f"{self._rate_prefix}:{user}"]
        request = f"{time.time_ns()}:{secrets.token_hex(4)}"
        args: list[str | int] = [
            self._limit,
            self._lease_ms,
            slot_id,
            self._rate,
            self._window_ms,
            request,
        ]
        try:
            answer = int(await self._enter(keys=keys, args=args))
        except RedisError as exc:
            self._fallback.note(exc)
            entry = await self._local_gate.enter(user, slot_id)
        else:
            if answer < 0:
                entry = ENTERED
            elif answer == 0:
                entry = Entry(full=True)
            else:
                entry = Entry(retry_after=answer / 1000)
        if entry.taken:
            self._hold(user, slot_id)
        return entry
