"""Limits shared through Redis (services/storage/redis_limits.py), against the real Redis."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.storage.limits import ENTERED
from services.storage.redis_limits import RedisSlots, RedisStreamGate

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: aioredis.Redis) -> AsyncIterator[str]:
    value = f"test-limits-{secrets.token_hex(6)}"
    yield value
    keys = [key async for key in redis.scan_iter(match=f"{value}*")]
    if keys:
        await redis.delete(*keys)


def gate(
    redis: aioredis.Redis, prefix: str, *, streams: int, rate: int, **kw: float
) -> RedisStreamGate:
    return RedisStreamGate(redis, streams=streams, rate=rate, prefix=prefix, **kw)


async def test_rate_is_shared_and_atomic(redis: aioredis.Redis, prefix: str) -> None:
    nodes = [gate(redis, prefix, streams=100, rate=5) for _ in range(3)]
    entries = await asyncio.gather(*(nodes[i % 3].enter("alice", f"s{i}") for i in range(20)))
    assert sum(1 for e in entries if e.taken) == 5
    assert all(0 < (e.retry_after or 0) <= 60 for e in entries if not e.taken)
    assert await redis.zcard(f"{prefix}:streams:alice") == 5  # refused requests hold none
    assert (await nodes[0].enter("bob", "s1")).taken
    assert await redis.pttl(f"{prefix}:rate:alice") > 0  # keys expire on their own
    assert await redis.pttl(f"{prefix}:streams:alice") > 0
    for node in nodes:
        await node.aclose()


async def test_rate_window_rolls(redis: aioredis.Redis, prefix: str) -> None:
    limiter = gate(redis, prefix, streams=5, rate=1, window_s=0.3)
    assert await limiter.enter("alice", "s1") == ENTERED
    assert (await limiter.enter("alice", "s2")).retry_after is not None
    await asyncio.sleep(0.35)
    assert await limiter.enter("alice", "s3") == ENTERED
    await limiter.aclose()


async def test_full_slots_count_no_request_and_refusals_take_no_slot(
    redis: aioredis.Redis, prefix: str
) -> None:
    nodes = [gate(redis, prefix, streams=1, rate=2) for _ in range(2)]
    assert await nodes[0].enter("alice", "s1") == ENTERED
    for attempt in range(3):  # the other node sees the one slot held
        entry = await nodes[1].enter("alice", f"x{attempt}")
        assert (entry.full, entry.retry_after) == (True, None)
    assert await redis.zcard(f"{prefix}:rate:alice") == 1
    await nodes[0].release("alice", "s1")
    assert await nodes[1].enter("alice", "s2") == ENTERED  # the second of the minute
    await nodes[1].release("alice", "s2")
    over = await nodes[0].enter("alice", "s3")
    assert not over.full
    assert over.retry_after is not None
    assert await redis.zcard(f"{prefix}:streams:alice") == 0
    for node in nodes:
        await node.aclose()


async def test_slots_are_shared_and_atomic(redis: aioredis.Redis, prefix: str) -> None:
    nodes = [RedisSlots(redis, 3, prefix=prefix) for _ in range(2)]
    taken = await asyncio.gather(*(nodes[i % 2].acquire("alice", f"c{i}") for i in range(10)))
    assert sum(taken) == 3
    holder = next(i for i, ok in enumerate(taken) if ok)
    await nodes[holder % 2].release("alice", f"c{holder}")
    assert await nodes[1].acquire("alice", "new")
    assert not await nodes[0].acquire("alice", "newer")
    for node in nodes:
        await node.aclose()
    assert await redis.zcard(f"{prefix}:alice") == 0  # a stopping node gives back its slots


_NODE = """
import asyncio, sys
import redis.asyncio as aioredis
from services.storage.redis_limits import RedisSlots

async def main():
    slots = RedisSlots(aioredis.from_url(sys.argv[1]), 1, prefix=sys.argv[2], lease_s=0.5)
    assert await slots.acquire("alice", "c1")
    print("held", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_slots_of_a_dead_node_expire_with_their_lease(prefix: str) -> None:
    node = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _NODE,
        REDIS_URL,
        prefix,
        cwd=Path(__file__).resolve().parents[2],
        stdout=asyncio.subprocess.PIPE,
    )
    assert node.stdout is not None
    assert await asyncio.wait_for(node.stdout.readline(), 30) == b"held\n"
    client = aioredis.from_url(REDIS_URL)
    live = RedisSlots(client, 1, prefix=prefix, lease_s=0.5)
    try:
        await asyncio.sleep(1.0)  # the other node renews its lease while it lives
        assert not await live.acquire("alice", "c2")
        node.kill()  # now it dies without giving anything back
        await node.wait()
        await asyncio.sleep(0.8)
        assert await live.acquire("alice", "c2")
        # and this node's lease is renewed in turn
        await asyncio.sleep(1.2)
        assert not await RedisSlots(client, 1, prefix=prefix).acquire("alice", "c3")
    finally:
        if node.returncode is None:
            node.kill()
            await node.wait()
        await live.aclose()
        await client.aclose()


async def test_falls_back_to_per_node_limits_without_redis() -> None:
    nowhere = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        limiter = gate(nowhere, "x", streams=1, rate=2)
        assert await limiter.enter("alice", "s1") == ENTERED
        assert (await limiter.enter("alice", "s2")).full
        await limiter.release("alice", "s1")
        assert await limiter.enter("alice", "s3") == ENTERED
        await limiter.release("alice", "s3")
        assert (await limiter.enter("alice", "s4")).retry_after is not None
        await limiter.aclose()
        slots = RedisSlots(nowhere, 1, prefix="x")
        assert await slots.acquire("alice", "c1")
        assert not await slots.acquire("alice", "c2")
        await slots.release("alice", "c1")
        assert await slots.acquire("alice", "c2")
        await slots.aclose()
    finally:
        await nowhere.aclose()
