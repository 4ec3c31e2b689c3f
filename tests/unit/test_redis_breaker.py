"""The Redis breaker against a real redis-server of the test's own: it opens when Redis
hangs (SIGSTOP), fails calls at once meanwhile, and closes by itself once Redis answers."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time

import pytest
from redis.exceptions import RedisError

from services.storage.redis_client import Breaker, RedisUnavailable, redis_client
from tests.redis_server import redis_server_process

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server")


async def test_fails_fast_while_redis_hangs_and_recovers_by_itself() -> None:
    with redis_server_process() as (url, proc):
        breaker = Breaker(0.3, cooldown_s=0.2)
        client = redis_client(url, timeout_s=0.3, breaker=breaker)
        try:
            assert await client.ping()
            proc.send_signal(signal.SIGSTOP)
            try:
                start = time.monotonic()
                with pytest.raises(RedisError):
                    await client.set("k", "v")
                assert time.monotonic() - start < 1.5
                assert not breaker.up
                start = time.monotonic()
                with pytest.raises(RedisUnavailable):
                    await client.get("k")
                assert time.monotonic() - start < 0.1  # no wait: the breaker is open
            finally:
                proc.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 5
            while True:
                try:
                    assert await client.ping()
                    break
                except RedisError:
                    assert time.monotonic() < deadline, "never recovered"
                    await asyncio.sleep(0.05)
            assert breaker.up
        finally:
            await client.aclose()
