"""The node command bus: in one process, and between nodes over real Redis pub/sub."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest
import redis.asyncio as aioredis

from bench.procs import free_port
from services.storage.bus import LocalBus, RedisBus
from tests.redis_server import redis_server_process


class Handler:
    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, command: str, key: str) -> bool:
        self.calls.append((command, key))
        return key in self.known


async def test_local_bus_delivers_only_to_its_own_node() -> None:
    bus = LocalBus()
    handler = Handler({"k1"})
    await bus.start(handler)
    assert await bus.send(bus.node_id, "cancel", "k1") is True
    assert await bus.send(bus.node_id, "cancel", "k2") is False
    assert await bus.send("node_other", "cancel", "k1") is False
    assert await bus.send(bus.node_id, "format-disk", "k1") is False
    assert handler.calls == [("cancel", "k1"), ("cancel", "k2")]
    await bus.aclose()
    assert await bus.send(bus.node_id, "cancel", "k1") is False


async def test_redis_bus_reaches_the_other_node_and_returns_its_answer(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    one, two = RedisBus(redis_client, prefix=key_prefix), RedisBus(redis_client, prefix=key_prefix)
    h1, h2 = Handler({"on-one"}), Handler({"on-two"})
    await one.start(h1)
    await two.start(h2)
    try:
        assert await one.send(two.node_id, "cancel", "on-two") is True
        assert await one.send(two.node_id, "attach", "on-one") is False
        assert await two.send(one.node_id, "detach", "on-one") is True
        assert await one.send(one.node_id, "disconnect", "on-one") is True  # itself: no Redis
        assert h2.calls == [("cancel", "on-two"), ("attach", "on-one")]
        assert h1.calls == [("detach", "on-one"), ("disconnect", "on-one")]
        # a node nobody runs: no receiver, an answer at once
        assert await one.send("node_gone", "cancel", "on-two", wait_s=5) is False
        results = await asyncio.gather(
            *(one.send(two.node_id, "cancel", "on-two" if i % 2 else "x") for i in range(20))
        )
        assert results == [bool(i % 2) for i in range(20)]
    finally:
        await one.aclose()
        await two.aclose()


async def test_redis_bus_ignores_malformed_messages(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    bus = RedisBus(redis_client, prefix=key_prefix)
    handler = Handler({"k"})
    await bus.start(handler)
    try:
        channel = f"{key_prefix}bus:{bus.node_id}"
        for junk in (b"\x80\x04pickle", b"[1,2]", b'{"op": "cancel"}', b'{"op": "rm", "key": "k"}'):
            await redis_client.publish(channel, junk)
        other = RedisBus(redis_client, prefix=key_prefix)
        await other.start(Handler(set()))
        try:
            assert await other.send(bus.node_id, "cancel", "k") is True
        finally:
            await other.aclose()
        assert handler.calls == [("cancel", "k")]
    finally:
        await bus.aclose()


async def test_a_node_started_without_redis_takes_commands_once_redis_is_there() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("needs the redis-server binary")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    client = aioredis.from_url(url, socket_connect_timeout=0.5)
    bus = RedisBus(client, prefix="t:")
    await bus.start(Handler({"k"}))  # Redis is not there: no error, it keeps trying
    try:
        assert await bus.send("node_other", "cancel", "k", wait_s=0.5) is False
        with redis_server_process(port):
            other_client = aioredis.from_url(url)
            other = RedisBus(other_client, prefix="t:")
            await other.start(Handler(set()))
            try:
                deadline = time.monotonic() + 20
                while not await other.send(bus.node_id, "cancel", "k", wait_s=0.5):
                    assert time.monotonic() < deadline, "the node never subscribed"
                    await asyncio.sleep(0.2)
            finally:
                await other.aclose()
                await other_client.aclose()
    finally:
        await bus.aclose()
        await client.aclose()
