"""``RedisRoomStore`` against a real Redis: several stores on one prefix act as nodes."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from bench.procs import free_port
from services.storage.redis_client import redis_client
from services.storage.redis_rooms import RedisRoomStore
from services.storage.rooms import LocalConnection, Member, RoomsUnavailable, new_message

pytestmark = pytest.mark.redis

ALICE = Member("alice", "Alice")
BOB = Member("bob", "Bob")


@pytest.fixture
async def client(redis_url: str, key_prefix: str) -> AsyncIterator[aioredis.Redis]:
    redis = redis_client(redis_url)
    yield redis
    keys = [key async for key in redis.scan_iter(match=key_prefix + "*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


@pytest.fixture
def node(client: aioredis.Redis, key_prefix: str) -> Callable[..., RedisRoomStore]:
    def make(name: str, **options: Any) -> RedisRoomStore:
        options.setdefault("history_limit", 5)
        options.setdefault("max_age_s", 3600)
        return RedisRoomStore(client, prefix=key_prefix, node_id=name, **options)

    return make


def nothing_local() -> list[LocalConnection]:
    return []


async def test_nodes_share_members_and_history(node: Callable[..., RedisRoomStore]) -> None:
    one, two = node("one"), node("two")
    await one.maintain(nothing_local)
    await two.maintain(nothing_local)
    assert (await one.join("lobby", "c1", ALICE))[0] == [ALICE]
    members, _ = await two.join("lobby", "c2", BOB)
    assert members == [ALICE, BOB]
    assert (await one.join("lobby", "c3", ALICE))[0] == [ALICE, BOB]  # a second tab
    new = [new_message("lobby", ALICE, "user", "hi")]
    history = await one.append("lobby", new)
    assert history == new
    assert await two.history("lobby") == new
    assert (await two.join("lobby", "c4", BOB))[1] == new
    assert await two.leave("lobby", "c2") == [ALICE, BOB]  # bob's other connection stays
    assert await one.leave("lobby", "c1") == [ALICE, BOB]
    await two.leave("lobby", "c4")
    assert await one.leave("lobby", "c3") == []


async def test_history_bounds_and_safe_decoding(
    node: Callable[..., RedisRoomStore], client: aioredis.Redis, key_prefix: str
) -> None:
    now = [1_000_000.0]
    one = node("one", history_limit=3, max_age_s=100, clock=lambda: now[0])
    for i in range(5):
        now[0] += 10
        await one.append("lobby", [new_message("lobby", ALICE, "user", f"m{i}", now[0])])
    assert [m["content"] for m in await one.history("lobby")] == ["m2", "m3", "m4"]
    now[0] += 85
    assert [m["content"] for m in await one.history("lobby")] == ["m3", "m4"]
    ttl = await client.ttl(f"{key_prefix}room:lobby:history")
    assert 0 < ttl <= 100
    # whatever else sits in the list is never unpickled or trusted, only skipped
    await client.rpush(f"{key_prefix}room:lobby:history", pickle.dumps({"ts": 1}), b"[1]", b"{")
    assert [m["content"] for m in await one.history("lobby")] == ["m3", "m4"]


async def test_a_dead_node_disappears_and_is_swept(
    node: Callable[..., RedisRoomStore], client: aioredis.Redis, key_prefix: str
) -> None:
    one = node("one")
    two = node("two", heartbeat_s=0.1)  # its marker lives 0.3 s
    await one.maintain(nothing_local)
    await two.maintain(nothing_local)
    await one.join("lobby", "c1", ALICE)
    await two.join("lobby", "c2", BOB)
    await two.connected("c2")
    assert await one.members("lobby") == [ALICE, BOB]
    assert await one.is_connection("c2")

    await asyncio.sleep(0.5)  # two stops heartbeating (it "crashed")
    assert await one.members("lobby") == [ALICE]
    assert not await one.is_connection("c2")
    assert await one.maintain(nothing_local) == ["lobby"]
    assert not await client.exists(f"{key_prefix}rooms:node:two:members")
    assert await client.hkeys(f"{key_prefix}room:lobby:conns") == [b"c1"]
    assert await client.smembers(f"{key_prefix}rooms:nodes") == {b"one"}


async def test_a_node_reasserts_its_connections_after_redis_lost_them(
    node: Callable[..., RedisRoomStore], client: aioredis.Redis, key_prefix: str
) -> None:
    one = node("one")
    local = [LocalConnection("c1", ALICE, frozenset({"lobby", "dev"}))]
    await one.maintain(lambda: local)
    await one.join("lobby", "c1", ALICE)
    await one.join("dev", "c1", ALICE)
    await one.join("gone", "c9", BOB)  # not in the local truth: dropped on resync
    keys = [key async for key in client.scan_iter(match=key_prefix + "*")]
    await client.delete(*keys)  # Redis restarted empty

    changed = await one.maintain(lambda: local)
    assert changed == ["dev", "lobby"]
    assert await one.members("lobby") == [ALICE]
    assert await one.members("dev") == [ALICE]
    assert await one.is_connection("c1")
    assert await one.maintain(lambda: local) == []  # nothing to do while all is well


async def test_a_graceful_stop_removes_the_nodes_memberships(
    node: Callable[..., RedisRoomStore], client: aioredis.Redis, key_prefix: str
) -> None:
    one, two = node("one"), node("two")
    await one.maintain(nothing_local)
    await two.maintain(nothing_local)
    await one.join("lobby", "c1", ALICE)
    await two.join("lobby", "c2", BOB)
    assert await one.aclose() == ["lobby"]
    assert await two.members("lobby") == [BOB]
    assert await client.smembers(f"{key_prefix}rooms:nodes") == {b"two"}


async def test_redis_down_is_reported_as_unavailable() -> None:
    dead = redis_client(f"redis://127.0.0.1:{free_port()}/0")
    try:
        rooms = RedisRoomStore(dead, prefix="x:", history_limit=5, max_age_s=60)
        with pytest.raises(RoomsUnavailable):
            await rooms.join("lobby", "c1", ALICE)
        with pytest.raises(RoomsUnavailable):
            await rooms.append("lobby", [new_message("lobby", ALICE, "user", "hi")])
        with pytest.raises(RoomsUnavailable):
            await rooms.is_connection("c1")
        assert await rooms.maintain(nothing_local) == []  # upkeep never raises
        assert await rooms.aclose() == []
    finally:
        await dead.aclose()
