"""The stream log contract, for the in-memory log and the Redis Streams log (real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from services.storage.redis_streamlog import RedisStreamLog
from services.storage.streamlog import Event, MemoryStreamLog, StreamLog, StreamLost, StreamMeta

MakeLog = Callable[..., Any]


@pytest.fixture(params=["memory", "redis"])
async def make_log(request: pytest.FixtureRequest) -> AsyncIterator[MakeLog]:
    """Build logs of one kind; Redis ones share a fresh key prefix, removed afterwards."""
    logs: list[Any] = []
    clients: list[aioredis.Redis] = []
    prefix = ""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("key_prefix")

    def make(*, retention_s: float = 60, max_events: int = 100_000, node_id: str = "n1") -> Any:
        log: Any
        if request.param == "memory":
            log = MemoryStreamLog(retention_s=retention_s, max_events=max_events)
        else:
            client = aioredis.from_url(url)
            clients.append(client)
            log = RedisStreamLog(
                client,
                prefix=prefix,
                node_id=node_id,
                retention_s=retention_s,
                live_ttl_s=120,
                max_events=max_events,
                block_s=0.2,
            )
        logs.append(log)
        return log

    yield make
    for log in logs:
        await log.aclose()
    for client in clients:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def meta(request_id: str = "r1", owner: str = "alice", room: str | None = None) -> StreamMeta:
    return StreamMeta(f"{request_id}|{owner}", request_id, owner, room)


def token(seq: int, request_id: str = "r1") -> dict[str, Any]:
    return {"request_id": request_id, "seq": seq, "content": f"t{seq} "}


DONE = {"request_id": "r1", "finish_reason": "stop", "model": "m", "usage": {}}


async def collect(log: StreamLog, key: str, after_seq: int, timeout: float = 5) -> list[Event]:
    async def run() -> list[Event]:
        return [event async for event in log.tail(key, after_seq)]

    return await asyncio.wait_for(run(), timeout)


async def write(log: StreamLog, m: StreamMeta, tokens: int, *, end: bool = True) -> None:
    await log.open(m)
    for seq in range(tokens):
        await log.append(m.key, "token", token(seq, m.request_id))
    if end:
        await log.close(m.key, "done", DONE)


async def test_tail_gives_events_after_last_seq_then_the_terminal(make_log: MakeLog) -> None:
    log = make_log()
    m = meta()
    await write(log, m, 5)
    events = await collect(log, m.key, 1)
    assert events == [("token", token(s)) for s in (2, 3, 4)] + [("done", DONE)]
    assert await collect(log, m.key, -1) == [("token", token(s)) for s in range(5)] + [
        ("done", DONE)
    ]


@pytest.mark.parametrize("after_seq", [4, 5, 100])
async def test_the_terminal_is_given_even_past_the_last_token(
    make_log: MakeLog, after_seq: int
) -> None:
    log = make_log()
    m = meta()
    await write(log, m, 5)
    assert await collect(log, m.key, after_seq) == [("done", DONE)]


async def test_tail_of_a_live_stream_waits_for_new_events_in_order(make_log: MakeLog) -> None:
    log = make_log()
    m = meta()
    await write(log, m, 2, end=False)
    reader = asyncio.create_task(collect(log, m.key, 0, timeout=10))
    for seq in range(2, 30):
        await log.append(m.key, "token", token(seq))
        if seq % 7 == 0:
            await asyncio.sleep(0.05)
    await log.close(m.key, "done", DONE)
    events = await reader
    assert events == [("token", token(s)) for s in range(1, 30)] + [("done", DONE)]


async def test_a_live_stream_that_ends_before_last_seq_still_gives_its_terminal(
    make_log: MakeLog,
) -> None:
    log = make_log()
    m = meta()
    await write(log, m, 0, end=False)
    reader = asyncio.create_task(collect(log, m.key, 10, timeout=10))
    await asyncio.sleep(0.05)
    for seq in range(3):
        await log.append(m.key, "token", token(seq))
    await log.close(m.key, "done", DONE)
    assert await reader == [("done", DONE)]


async def test_meta_find_and_rooms(make_log: MakeLog) -> None:
    log = make_log()
    mine, theirs = meta("same", "alice"), meta("same", "bob", room="lobby")
    await write(log, mine, 1, end=False)
    await write(log, theirs, 1)
    got = await log.meta(mine.key)
    assert got is not None
    assert (got.owner, got.room, got.ended) == ("alice", None, False)
    ended = await log.meta(theirs.key)
    assert ended is not None
    assert (ended.room, ended.ended) == ("lobby", True)
    found = await log.find("same")
    assert sorted(m.owner for m in found) == ["alice", "bob"]
    in_room = await log.find_in_room("lobby", "same")
    assert in_room is not None
    assert in_room.owner == "bob"
    assert await log.find_in_room("elsewhere", "same") is None
    assert await log.find("other") == []
    assert await log.meta("nope|alice") is None


async def test_finished_streams_expire_after_retention(make_log: MakeLog) -> None:
    log = make_log(retention_s=0.3)
    for i in range(20):
        await write(log, meta(f"x{i}"), 3)
    live = meta("live")
    await write(log, live, 2, end=False)
    assert await log.size() == 21
    await asyncio.sleep(0.6)
    for _ in range(40):
        if await log.size() == 1:
            break
        await asyncio.sleep(0.1)
    assert await log.size() == 1  # only the live one is left
    assert await log.meta("x0|alice") is None
    assert await log.find("x0") == []
    with pytest.raises(StreamLost) as lost:
        await collect(log, "x0|alice", -1)
    assert lost.value.reason == "expired"
    await log.close(live.key, "done", DONE)


async def test_the_oldest_events_go_at_the_cap_and_a_tail_never_skips(make_log: MakeLog) -> None:
    log = make_log(max_events=100)
    m = meta()
    await write(log, m, 1000)
    first = await log.retained_from(m.key)
    assert 0 < first <= 1000 - 100
    events = await collect(log, m.key, 999)
    assert events == [("done", DONE)]
    kept = await collect(log, m.key, first - 1)
    assert kept[0] == ("token", token(first))
    assert len(kept) == 1000 - first + 1
    with pytest.raises(StreamLost) as lost:
        await collect(log, m.key, -1)
    assert lost.value.reason == "trimmed"


async def test_reopening_a_key_starts_a_new_stream(make_log: MakeLog) -> None:
    log = make_log()
    m = meta()
    await write(log, m, 4)
    await write(log, m, 2)
    assert await collect(log, m.key, -1) == [("token", token(s)) for s in range(2)] + [
        ("done", DONE)
    ]


async def test_redis_log_keeps_nothing_after_retention(redis_url: str, key_prefix: str) -> None:
    client = aioredis.from_url(redis_url)
    log = RedisStreamLog(
        client, prefix=key_prefix, node_id="n1", retention_s=0.3, live_ttl_s=60, block_s=0.2
    )
    try:
        for i in range(50):
            await write(log, meta(f"k{i}", room="lobby" if i % 2 else None), 5)
        assert [k async for k in client.scan_iter(match=f"{key_prefix}log:*")]
        await log.aclose()  # the heartbeat key goes with the node
        await asyncio.sleep(0.5)
        for _ in range(50):
            left = [k async for k in client.scan_iter(match=f"{key_prefix}*")]
            if not left:
                break
            await asyncio.sleep(0.1)
        assert left == []
    finally:
        await client.aclose()


async def test_redis_tail_of_an_orphaned_stream_raises(redis_url: str, key_prefix: str) -> None:
    """The node that ran a stream is gone (no heartbeat): a reader does not wait forever."""
    client = aioredis.from_url(redis_url)
    runner = RedisStreamLog(
        client, prefix=key_prefix, node_id="dead", retention_s=5, live_ttl_s=60, block_s=0.1
    )
    reader = RedisStreamLog(
        client, prefix=key_prefix, node_id="alive", retention_s=5, live_ttl_s=60, block_s=0.1
    )
    try:
        m = meta()
        await write(runner, m, 3, end=False)
        assert len(await asyncio.wait_for(take(reader.tail(m.key, -1), 3), 5)) == 3
        await client.delete(f"{key_prefix}nodes:dead")  # what 15 s without a beat leaves
        with pytest.raises(StreamLost) as lost:
            await collect(reader, m.key, 2)
        assert lost.value.reason == "orphaned"
    finally:
        await runner.aclose()
        await reader.aclose()
        keys = [k async for k in client.scan_iter(match=f"{key_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def take(events: Any, n: int) -> list[Event]:
    out: list[Event] = []
    async for event in events:
        out.append(event)
        if len(out) == n:
            break
    return out


async def test_redis_appends_are_batched_into_few_round_trips(
    redis_url: str, key_prefix: str
) -> None:
    """1,000 tokens appended back to back reach Redis in far fewer pipelines than tokens."""
    client = aioredis.from_url(redis_url)
    log = RedisStreamLog(client, prefix=key_prefix, node_id="n1", retention_s=5, live_ttl_s=60)
    try:
        m = meta()
        await log.open(m)
        for seq in range(1000):
            await log.append(m.key, "token", token(seq))
            if seq % 100 == 0:
                await asyncio.sleep(0)  # the upstream reader yields now and then
        await log.close(m.key, "done", DONE)
        assert log.events_written == 1001
        assert log.batches_written < 100
        events = await collect(log, m.key, -1)
        assert [p["seq"] for e, p in events if e == "token"] == list(range(1000))
    finally:
        await log.aclose()
        keys = [k async for k in client.scan_iter(match=f"{key_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
