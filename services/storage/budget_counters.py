"""Budget counters per user and UTC day: in memory, or in Redis shared by every node.

``RedisCounters`` keeps one hash per user and day, ``{tokens, cost (nano-USD), seeded}``,
expiring just after the next UTC midnight.  When Redis fails it counts in memory on this
node for a while (``retry_s``) instead of waiting on Redis for every batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
NANO = 1_000_000_000  # cost is counted in Redis as integer nano-dollars


class Counters(Protocol):
    async def add(
        self, user: str, day: str, tokens: int, cost: float, expire_at: float
    ) -> tuple[int, float]:
        """Add to the day's counters; return the totals after."""
        ...

    async def get(self, user: str, day: str) -> tuple[int, float] | None:
        """The day's totals, ``None`` when never seeded from the ledger."""
        ...

    async def seed(self, user: str, day: str, tokens: int, cost: float, expire_at: float) -> None:
        """Add the ledger's totals once per counter (a no-op when already seeded)."""
        ...


class MemoryCounters:
    """This process's counters: today's and yesterday's (a stream may end after midnight)."""

    def __init__(self) -> None:
        self._days: dict[str, dict[str, list[float]]] = {}  # day -> user -> [tokens, cost, seeded]

    def _entry(self, user: str, day: str) -> list[float]:
        counts = self._days.get(day)
        if counts is None:
            counts = self._days[day] = {}
            for old in sorted(self._days)[:-2]:
                del self._days[old]
        return counts.setdefault(user, [0, 0.0, 0])

    async def add(
        self, user: str, day: str, tokens: int, cost: float, expire_at: float
    ) -> tuple[int, float]:
        entry = self._entry(user, day)
        entry[0] += tokens
        entry[1] += cost
        return int(entry[0]), entry[1]

    async def get(self, user: str, day: str) -> tuple[int, float] | None:
        entry = self._entry(user, day)
        return (int(entry[0]), entry[1]) if entry[2] else None

    def totals(self, user: str, day: str) -> tuple[int, float]:
        """Seeded or not (what this node counted while Redis was away)."""
        entry = self._entry(user, day)
        return int(entry[0]), entry[1]

    async def seed(self, user: str, day: str, tokens: int, cost: float, expire_at: float) -> None:
        entry = self._entry(user, day)
        if not entry[2]:
            entry[0] += tokens
            entry[1] += cost
            entry[2] = 1


class RedisCounters:
    """One hash per user and day, ``{tokens, cost (nano-USD), seeded}``, gone at midnight."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        timeout_s: float,
        retry_s: float = 5.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._timeout = timeout_s
        self._retry_s = retry_s
        self._clock = clock
        self._local = MemoryCounters()
        self._failing = False
        self._down_until = 0.0  # after a failure, count locally for a while: no stalls

    def _key(self, user: str, day: str) -> str:
        return f"{self._prefix}budget:{day}:{user}"

    async def _call(self, coro: Awaitable[Any]) -> Any:
        if self._clock() < self._down_until:
            if asyncio.iscoroutine(coro):
                coro.close()
            raise TimeoutError("Redis failed a moment ago")
        try:
            result = await asyncio.wait_for(coro, self._timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._failing:
                logger.warning("budget counters: Redis failed (%s); counting on this node", exc)
            self._failing = True
            self._down_until = self._clock() + self._retry_s
            raise
        if self._failing:
            logger.warning("budget counters: Redis answers again")
            self._failing = False
        return result

    async def add(
        self, user: str, day: str, tokens: int, cost: float, expire_at: float
    ) -> tuple[int, float]:
        key = self._key(user, day)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hincrby(key, "tokens", tokens)
        pipe.hincrby(key, "cost", round(cost * NANO))
        pipe.expireat(key, int(expire_at) + 60)
        try:
            total, nano, _ = await self._call(pipe.execute())
        except (RedisError, OSError, TimeoutError):
            return await self._local.add(user, day, tokens, cost, expire_at)
        return int(total), int(nano) / NANO

    async def get(self, user: str, day: str) -> tuple[int, float] | None:
        try:
            tokens, nano, seeded = await self._call(
                self._redis.hmget(self._key(user, day), ["tokens", "cost", "seeded"])
            )
        except (RedisError, OSError, TimeoutError):
            return self._local.totals(user, day)
        if not seeded:
            return None
        return int(tokens or 0), int(nano or 0) / NANO

    async def seed(self, user: str, day: str, tokens: int, cost: float, expire_at: float) -> None:
        key = self._key(user, day)
        try:
            first = await self._call(self._redis.hsetnx(key, "seeded", 1))
            if first:
                await self.add(user, day, tokens, cost, expire_at)
        except (RedisError, OSError, TimeoutError):
            await self._local.seed(user, day, tokens, cost, expire_at)
