"""Lazy private streams in the Redis log (real Redis): nothing per event while the owner
is connected; a reader anywhere has the owning node write it out first; a stream that
ended lazily is one value; a dead owner ends the reader with ``orphaned``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from services.storage.redis_streamlog import RedisStreamLog
from services.storage.streamlog import StreamLost, StreamMeta

pytestmark = pytest.mark.redis


@pytest.fixture
async def nodes(redis_client: aioredis.Redis, key_prefix: str) -> AsyncIterator[Callable[..., Any]]:
    """Logs of several nodes on one Redis; ``ask_node`` reaches the named node's log."""
    made: dict[str, RedisStreamLog] = {}

    async def ask(node: str, key: str) -> bool:
        log = made.get(node)
        return log is not None and await log.materialize(key)

    def make(node_id: str, *, max_events: int = 100_000) -> RedisStreamLog:
        log = RedisStreamLog(
            redis_client,
            prefix=key_prefix,
            node_id=node_id,
            retention_s=30,
            live_ttl_s=120,
            block_s=0.2,
            lease_s=3,
            max_events=max_events,
            lazy=True,
        )
        log.ask_node = ask
        made[node_id] = log
        return log

    yield make
    for log in made.values():
        await log.aclose()


def meta(request_id: str = "r1", room: str | None = None) -> StreamMeta:
    return StreamMeta(f"{request_id}|alice", request_id, "alice", room)


def token(seq: int) -> dict[str, Any]:
    return {"request_id": "r1", "seq": seq, "content": f"t{seq} "}


DONE = {"request_id": "r1", "finish_reason": "stop"}


async def collect(log: RedisStreamLog, key: str, after_seq: int) -> list[Any]:
    async def run() -> list[Any]:
        return [event async for event in log.tail(key, after_seq)]

    return await asyncio.wait_for(run(), 10)


async def test_a_private_stream_costs_no_write_per_event_and_ends_as_one_value(
    nodes: Callable[..., RedisStreamLog], redis_client: aioredis.Redis, key_prefix: str
) -> None:
    owner, reader = nodes("n1"), nodes("n2")
    m = meta()
    await owner.open(m)
    for seq in range(5):
        await owner.append(m.key, "token", token(seq))
    await asyncio.sleep(0.1)
    assert await redis_client.exists(f"{key_prefix}log:{m.key}") == 0
    found = await reader.meta(m.key)
    assert found is not None
    assert found.lazy
    assert not found.ended
    await owner.close(m.key, "done", DONE)
    assert owner.events_written == 6
    assert owner.batches_written == 1
    assert await redis_client.exists(f"{key_prefix}body:{m.key}") == 1
    assert await collect(reader, m.key, -1) == [
        *(("token", token(s)) for s in range(5)),
        ("done", DONE),
    ]
    after_two = [("token", token(3)), ("token", token(4)), ("done", DONE)]
    assert await collect(reader, m.key, 2) == after_two
    assert await collect(reader, m.key, 4) == [("done", DONE)]


async def test_a_reader_on_another_node_has_the_owner_write_it_then_follows_live(
    nodes: Callable[..., RedisStreamLog],
) -> None:
    owner, reader = nodes("n1"), nodes("n2")
    m = meta()
    await owner.open(m)
    for seq in range(3):
        await owner.append(m.key, "token", token(seq))
    got: list[Any] = []

    async def read() -> None:
        async for event in reader.tail(m.key, 0):
            got.append(event)

    task = asyncio.create_task(read())
    for _ in range(100):  # the replay reached the live edge
        if len(got) == 2:
            break
        await asyncio.sleep(0.02)
    found = await reader.meta(m.key)
    assert found is not None
    assert not found.lazy
    for seq in range(3, 6):
        await owner.append(m.key, "token", token(seq))
    await owner.close(m.key, "done", DONE)
    await asyncio.wait_for(task, 5)
    assert got == [*(("token", token(s)) for s in range(1, 6)), ("done", DONE)]


async def test_a_reader_on_the_owning_node_writes_it_itself(
    nodes: Callable[..., RedisStreamLog],
) -> None:
    owner = nodes("n1")
    owner.ask_node = None  # no other node to ask
    m = meta()
    await owner.open(m)
    await owner.append(m.key, "token", token(0))
    reading = asyncio.create_task(collect(owner, m.key, -1))
    await asyncio.sleep(0.2)
    await owner.append(m.key, "token", token(1))
    await owner.close(m.key, "done", DONE)
    assert await reading == [("token", token(0)), ("token", token(1)), ("done", DONE)]


async def test_a_dead_owner_ends_the_reader_with_orphaned(
    nodes: Callable[..., RedisStreamLog], redis_client: aioredis.Redis, key_prefix: str
) -> None:
    owner, reader = nodes("dead"), nodes("n2")
    m = meta()
    await owner.open(m)
    await owner.append(m.key, "token", token(0))
    reader.ask_node = None  # its node does not answer…
    await redis_client.delete(f"{key_prefix}nodes:dead")  # …and its lease has run out
    with pytest.raises(StreamLost) as lost:
        await collect(reader, m.key, -1)
    assert lost.value.reason == "orphaned"


async def test_room_streams_are_logged_as_they_go(
    nodes: Callable[..., RedisStreamLog], redis_client: aioredis.Redis, key_prefix: str
) -> None:
    owner = nodes("n1")
    m = meta(room="lobby")
    await owner.open(m)
    await owner.append(m.key, "token", token(0))
    await asyncio.sleep(0.2)
    assert await redis_client.xlen(f"{key_prefix}log:{m.key}") == 1
    found = await owner.meta(m.key)
    assert found is not None
    assert not found.lazy


async def test_a_long_lazy_stream_goes_to_the_log_by_itself(
    nodes: Callable[..., RedisStreamLog], redis_client: aioredis.Redis, key_prefix: str
) -> None:
    owner, reader = nodes("n1", max_events=10), nodes("n2")
    reader.ask_node = None  # nobody asks: the length alone moves it
    m = meta()
    await owner.open(m)
    for seq in range(10):
        await owner.append(m.key, "token", token(seq))
    await asyncio.sleep(0.3)
    assert await redis_client.xlen(f"{key_prefix}log:{m.key}") == 10
    await owner.append(m.key, "token", token(10))
    await owner.close(m.key, "done", DONE)
    assert await collect(reader, m.key, 7) == [
        *(("token", token(s)) for s in range(8, 11)),
        ("done", DONE),
    ]


async def _script_exists_calls(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_script|exists", {}).get("calls", 0))


@pytest.mark.parametrize("room", [None, "lobby"], ids=["lazy", "room"])
async def test_open_and_end_send_no_script_check_and_index_after_redis_forgot_scripts(
    nodes: Callable[..., RedisStreamLog], redis_client: aioredis.Redis, room: str | None
) -> None:
    """The request-id index goes by EVAL in the open and end pipelines: redis-py would send
    a ``SCRIPT EXISTS`` round trip before a pipeline holding a registered script, and a
    Redis that restarted (no scripts cached) must still index the stream."""
    owner, reader = nodes("n1"), nodes("n2")
    await redis_client.script_flush()
    before = await _script_exists_calls(redis_client)
    m = meta(room=room)
    await owner.open(m)
    await owner.append(m.key, "token", token(0))
    await owner.close(m.key, "done", DONE)
    assert await _script_exists_calls(redis_client) == before
    assert [found.key for found in await reader.find("r1")] == [m.key]
    assert await collect(reader, m.key, -1) == [("token", token(0)), ("done", DONE)]
