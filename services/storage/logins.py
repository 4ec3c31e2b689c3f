"""Failed logins, counted to slow password guessing (``POST /auth/token``).

Only failures count; a success is never throttled.  ``LoginThrottle`` keeps two rolling
windows of failures: per account (``limit`` in ``window_s``) and per client address
(``5 * limit``), so one office behind a NAT does not lock itself out and a guesser who
rotates accounts is still slowed by its address.  In memory, or in Redis for all nodes
(falling back to memory while Redis is out, as the other limits do).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections import deque
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

ADDRESS_FACTOR = 5
_MAX_KEY_CHARS = 200  # a user name is the client's input: bound the key it makes

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS[1] failures; ARGV limit, window_ms.  Returns -1 (not blocked) or ms to wait.
_BLOCKED = (
    _NOW_MS
    + """
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then return -1 end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(tonumber(oldest[2]) + window - now, 1)
"""
)

# KEYS[1] failures; ARGV window_ms, member.
_FAILED = (
    _NOW_MS
    + """
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""
)


class FailureWindow(Protocol):
    async def blocked(self, key: str) -> float | None:
        """Seconds until ``key`` may try again, or ``None`` while under the limit."""
        ...

    async def failed(self, key: str) -> None: ...


class MemoryFailureWindow:
    def __init__(self, limit: int, window_s: float = 60.0) -> None:
        self._limit = limit
        self._window = window_s
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        while times and times[0] <= now - self._window:
            times.popleft()
        if times is not None and not times:
            del self._failures[key]
            return None
        return times

    async def blocked(self, key: str) -> float | None:
        now = time.monotonic()
        times = self._recent(key, now)
        if times is None or len(times) < self._limit:
            return None
        return max(times[0] + self._window - now, 0.001)

    async def failed(self, key: str) -> None:
        now = time.monotonic()
        times = self._recent(key, now)
        if times is None:
            times = self._failures[key] = deque()
            if len(self._failures) > 10_000:
                for old in [k for k in self._failures if k != key]:
                    self._recent(old, now)
        times.append(now)


class RedisFailureWindow:
    def __init__(
        self, redis: aioredis.Redis, limit: int, *, prefix: str, window_s: float = 60.0
    ) -> None:
        self._limit = limit
        self._window_ms = int(window_s * 1000)
        self._prefix = prefix
        self._blocked = redis.register_script(_BLOCKED)
        self._failed = redis.register_script(_FAILED)
        self._local = MemoryFailureWindow(limit, window_s)

    async def blocked(self, key: str) -> float | None:
        try:
            wait_ms = int(
                await self._blocked(keys=[self._prefix + key], args=[self._limit, self._window_ms])
            )
        except RedisError:
            return await self._local.blocked(key)
        return None if wait_ms < 0 else wait_ms / 1000

    async def failed(self, key: str) -> None:
        await self._local.failed(key)  # kept here too, for while Redis is out
        member = f"{time.time_ns()}:{secrets.token_hex(4)}"
        with contextlib.suppress(RedisError):
            await self._failed(keys=[self._prefix + key], args=[self._window_ms, member])


class LoginThrottle:
    """Failed logins per account and per client address."""

    def __init__(self, accounts: FailureWindow, addresses: FailureWindow) -> None:
        self._accounts = accounts
        self._addresses = addresses

    @staticmethod
    def _account(username: str) -> str:
        return "acct:" + username.strip().lower()[:_MAX_KEY_CHARS]

    async def retry_after(self, username: str, address: str) -> float | None:
        """Seconds until this account and address may try again (``None``: they may)."""
        waits = [
            await self._accounts.blocked(self._account(username)),
            await self._addresses.blocked("addr:" + address),
        ]
        blocked = [wait for wait in waits if wait is not None]
        return max(blocked) if blocked else None

    async def failed(self, username: str, address: str) -> None:
        await self._accounts.failed(self._account(username))
        await self._addresses.failed("addr:" + address)


def memory_login_throttle(limit: int) -> LoginThrottle:
    return LoginThrottle(MemoryFailureWindow(limit), MemoryFailureWindow(limit * ADDRESS_FACTOR))


def redis_login_throttle(redis: aioredis.Redis, limit: int, *, prefix: str) -> LoginThrottle:
    return LoginThrottle(
        RedisFailureWindow(redis, limit, prefix=prefix),
        RedisFailureWindow(redis, limit * ADDRESS_FACTOR, prefix=prefix),
    )
