"""The per-user limits of ``services.storage.limits``, shared by every node through Redis.

* ``RedisRateLimiter``: a rolling window per user — a sorted set of hit times, trimmed,
  counted and added to by one Lua script (atomic; times from Redis's clock, so the
  nodes' clocks do not matter).
* ``RedisSlots``: connections or streams a user holds at once — a sorted set of slot
  ids scored by a lease deadline.  The node holding a slot renews its lease while the
  slot lives, so the slots of a node that died free themselves after ``lease_s``.

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

from services.storage.limits import MemoryRateLimiter, MemorySlots

logger = logging.getLogger(__name__)

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS[1] hits; ARGV limit, window_ms, member.  Returns -1 (allowed) or ms to wait.
_RATE = (
    _NOW_MS
    + """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(tonumber(oldest[2]) + window - now, 1)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return -1
"""
)

# KEYS[1] slots; ARGV limit, lease_ms, slot id.  Returns 1 (taken) or 0 (full).
_ACQUIRE = (
    _NOW_MS
    + """
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) and
   redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
redis.call('PEXPIRE', KEYS[1], lease)
return 1
"""
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


class RedisRateLimiter:
    """At most ``limit`` accepted requests per user in any ``window_s``, on all nodes."""

    def __init__(
        self, redis: aioredis.Redis, limit: int, *, prefix: str, window_s: float = 60.0
    ) -> None:
        self._redis = redis
        self._limit = limit
        self._window_ms = int(window_s * 1000)
        self._prefix = prefix
        self._script = redis.register_script(_RATE)
        self._local = MemoryRateLimiter(limit, window_s)
        self._fallback = _Fallback("rate limits")

    async def hit(self, user: str) -> float | None:
        member = f"{time.time_ns()}:{secrets.token_hex(4)}"
        try:
            wait_ms = await self._script(
                keys=[f"{self._prefix}:{user}"], args=[self._limit, self._window_ms, member]
            )
        except RedisError as exc:
            self._fallback.note(exc)
            return await self._local.hit(user)
        wait_ms = int(wait_ms)
        return None if wait_ms < 0 else wait_ms / 1000


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
            self._held[(user, slot_id)] = key
            self._start_renewing()
        return taken

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
