"""One way to open a Redis client: every call bounded, and fast failure while Redis hangs.

* Every read waits at most ``timeout_s`` (``REDIS_TIMEOUT_S``; redis-py's socket
  timeout), and connecting gives up after it too.  A blocking read (``XREAD BLOCK``) needs
  a client whose timeout is longer than the block: ``redis_client(..., socket_timeout=…)``.
* A ``Breaker`` shared by the clients of one app: after a call timed out (or a connect
  failed), calls fail at once with ``RedisUnavailable`` (a redis ``ConnectionError``, so
  every ``except RedisError`` already handles it) instead of each waiting ``timeout_s``.
  After ``cooldown_s`` one call is let through as a trial; the first answer Redis gives
  closes the breaker, so service returns by itself when Redis does, without a restart.
* The breaker hooks three methods of redis-py's asyncio connection (read from redis-py
  8.2.0): ``send_packed_command``, ``read_response`` and ``connect``.
* A pooled connection to a Redis that restarted fails on first use ("Connection closed
  by server"); one immediate retry on connection errors takes a fresh connection, so
  the first command after an outage does not fail.
* ``max_connections`` bounds the pool (redis-py's ``BlockingConnectionPool``): a call that
  finds every connection busy waits at most ``timeout_s`` for one, then fails with a
  redis ``ConnectionError`` like any other outage.  Clients whose calls hold a connection
  for long (XREAD BLOCK, pub/sub) are left unbounded: a connection per call at once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 2.0  # REDIS_TIMEOUT_S


class RedisUnavailable(RedisConnectionError):
    """Redis did not answer in time a moment ago; not tried again until the cooldown ends."""


class Breaker:
    """Whether Redis answers; shared by every client (and connection) of one app."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, cooldown_s: float | None = None):
        self.timeout_s = timeout_s
        self.cooldown_s = min(timeout_s, 1.0) if cooldown_s is None else cooldown_s
        self._open_until = 0.0  # 0: closed (Redis answers)
        self.trips = 0

    @property
    def up(self) -> bool:
        return self._open_until == 0.0

    def admit(self) -> None:
        """Before a command is sent: raise while open; after the cooldown, one trial passes."""
        if self._open_until == 0.0:
            return
        now = time.monotonic()
        if now < self._open_until:
            raise RedisUnavailable("Redis did not answer in time; retrying shortly")
        self._open_until = now + self.timeout_s + self.cooldown_s  # others wait for the trial

    def failed(self, exc: BaseException) -> None:
        if self._open_until == 0.0:
            self.trips += 1
            logger.warning(
                "Redis did not answer within %.1f s (%s): failing fast until it does",
                self.timeout_s,
                type(exc).__name__,
            )
        self._open_until = time.monotonic() + self.cooldown_s

    def answered(self) -> None:
        if self._open_until != 0.0:
            self._open_until = 0.0
            logger.info("Redis answers again")


class _Guarded:
    """Mixed into the pool's connection class: reports to the breaker, asks it first."""

    breaker: Breaker
    _connecting = False  # in connect(): the handshake's commands go
    _admitted = False  # connected just now (the breaker let it): its first command goes

    async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        if self._connecting:
            pass  # the handshake of a connection the breaker let through
        elif self._admitted:
            self._admitted = False
        else:
            self.breaker.admit()
        await super().send_packed_command(*args, **kwargs)  # type: ignore[misc]

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            response = await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except (RedisTimeoutError, TimeoutError) as exc:
            self.breaker.failed(exc)
            raise
        self.breaker.answered()
        return response

    async def connect(self) -> None:
        if self.is_connected:  # type: ignore[attr-defined]
            return
        self.breaker.admit()  # no new connection (and its handshake) while Redis hangs
        self._connecting = True
        try:
            await super().connect()  # type: ignore[misc]
        except (RedisTimeoutError, TimeoutError, RedisConnectionError, OSError) as exc:
            self.breaker.failed(exc)
            raise
        finally:
            self._connecting = False
        self._admitted = True  # and its first command goes too


def _guarded(cls: type[AbstractConnection], breaker: Breaker) -> type[AbstractConnection]:
    return type(f"Guarded{cls.__name__}", (_Guarded, cls), {"breaker": breaker})


def redis_client(
    url: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    breaker: Breaker | None = None,
    max_connections: int | None = None,
    **options: Any,
) -> aioredis.Redis:
    """A client whose every call is bounded by ``timeout_s`` (``socket_timeout`` in
    ``options`` overrides it for reads, e.g. for blocking commands), on at most
    ``max_connections`` connections (``None``: as many as calls at once)."""
    options.setdefault("socket_timeout", timeout_s)
    pool_class: type[ConnectionPool] = ConnectionPool
    if max_connections is not None:  # a call waits at most timeout_s for a free connection
        pool_class = BlockingConnectionPool
        options.update(max_connections=max_connections, timeout=timeout_s)
    pool = pool_class.from_url(
        url,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
        socket_connect_timeout=timeout_s,
        socket_keepalive=True,
        **options,
    )
    pool.connection_class = _guarded(pool.connection_class, breaker or Breaker(timeout_s))
    return aioredis.Redis.from_pool(pool)
