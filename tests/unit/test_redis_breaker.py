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


async def test_a_bounded_pool_never_opens_more_connections_and_a_wait_is_bounded() -> None:
    """REDIS_MAX_CONNECTIONS: forty calls at once share two connections (Redis sees two
    connections); a call that finds both taken for longer than the timeout fails with a
    redis error after about the timeout, and the pool serves again once one is back."""
    with redis_server_process() as (url, _proc):
        client = redis_client(url, timeout_s=0.3, max_connections=2)
        admin = redis_client(url)
        try:
            results = await asyncio.gather(*(client.incr("n") for _ in range(40)))
            assert sorted(results) == list(range(1, 41))
            assert len(await admin.client_list()) <= 3  # the pool's two and the admin's
            pool = client.connection_pool
            held = [await pool.get_connection() for _ in range(2)]  # every connection taken
            start = time.monotonic()
            with pytest.raises(RedisError):
                await client.get("n")
            assert 0.25 <= time.monotonic() - start < 1.5
            await pool.release(held.pop())
            assert await client.get("n") == b"40"
            await pool.release(held.pop())
        finally:
            await client.aclose()
            await admin.aclose()
