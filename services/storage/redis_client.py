"""One way to open a Redis client, with options that survive a Redis restart.

A pooled connection to a Redis that restarted fails on first use ("Connection closed
by server"); one immediate retry on connection errors takes a fresh connection, so
the first command after an outage does not fail.  Connecting gives up after
``connect_timeout_s`` instead of hanging on an unreachable host.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError


def redis_client(url: str, *, connect_timeout_s: float = 2.0, **options: Any) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
        socket_connect_timeout=connect_timeout_s,
        socket_keepalive=True,
        **options,
    )
