"""The node's batched stream-log writer against real Redis: one pipeline carries several
streams, a stream's first and terminal entries never wait for the window, and a write
Redis refuses breaks only its own stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from services.storage.redis_streamlog import RedisStreamLog
from services.storage.streamlog import StreamLost, StreamMeta

pytestmark = pytest.mark.redis

MakeLog = Callable[..., RedisStreamLog]


@pytest.fixture
async def make_log(redis_client: aioredis.Redis, key_prefix: str) -> AsyncIterator[MakeLog]:
    """Logs on the test's Redis, closed before ``redis_client`` removes the test's keys."""
    logs: list[RedisStreamLog] = []

    def make(*, flush_s: float, node_id: str = "n1") -> RedisStreamLog:
        log = RedisStreamLog(
            redis_client,
            prefix=key_prefix,
            node_id=node_id,
            retention_s=30,
            live_ttl_s=120,
            block_s=0.2,
            flush_s=flush_s,
        )
        logs.append(log)
        return log

    yield make
    for log in logs:
        await log.aclose()


def meta(request_id: str) -> StreamMeta:
    return StreamMeta(f"{request_id}|alice", request_id, "alice")


def token(request_id: str, seq: int) -> dict[str, Any]:
    return {"request_id": request_id, "seq": seq, "content": f"{request_id}:{seq} "}


def done(request_id: str) -> dict[str, Any]:
    return {"request_id": request_id, "finish_reason": "stop"}


async def read_all(log: RedisStreamLog, key: str, after_seq: int = -1) -> list[Any]:
    async def run() -> list[Any]:
        return [event async for event in log.tail(key, after_seq)]

    return await asyncio.wait_for(run(), 5)


async def stored(client: aioredis.Redis, log_key: str) -> int:
    return int(await client.xlen(log_key))


async def test_one_round_carries_the_entries_of_many_streams(make_log: MakeLog) -> None:
    log = make_log(flush_s=0.05)
    streams = [meta(f"r{i}") for i in range(20)]
    for m in streams:
        await log.open(m)
    for step in range(10):  # 20 streams, paced: each appends a token, then the loop yields
        for m in streams:
            await log.append(m.key, "token", token(m.request_id, step))
        await asyncio.sleep(0.002)
    await asyncio.gather(*(log.close(m.key, "done", done(m.request_id)) for m in streams))
    assert log.events_written == 20 * 11
    # a writer per stream sends at least one round per stream and token batch (200)
    assert log.batches_written <= 6, log.batches_written
    for m in streams:
        events = await read_all(log, m.key)
        assert events == [("token", token(m.request_id, s)) for s in range(10)] + [
            ("done", done(m.request_id))
        ]


async def test_first_and_terminal_entries_do_not_wait_for_the_window(
    make_log: MakeLog, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    log = make_log(flush_s=30)  # a window far longer than the test
    m = meta("r1")
    log_key = f"{key_prefix}log:{m.key}"
    await log.open(m)
    await log.append(m.key, "token", token("r1", 0))
    first = await asyncio.wait_for(take_one(log, m.key), 2)  # stored at once
    assert first == ("token", token("r1", 0))
    await log.append(m.key, "token", token("r1", 1))
    await log.append(m.key, "token", token("r1", 2))
    await asyncio.sleep(0.3)
    assert await stored(redis_client, log_key) == 1  # later tokens wait for the window…
    started = time.monotonic()
    await log.close(m.key, "done", done("r1"))  # …but the terminal does not
    assert time.monotonic() - started < 2
    assert await read_all(log, m.key) == [
        *(("token", token("r1", s)) for s in range(3)),
        ("done", done("r1")),
    ]


async def take_one(log: RedisStreamLog, key: str) -> Any:
    async for event in log.tail(key, -1):
        return event
    return None


async def test_a_window_of_zero_still_batches_what_queued_meanwhile(make_log: MakeLog) -> None:
    log = make_log(flush_s=0)
    m = meta("r1")
    await log.open(m)
    for seq in range(500):
        await log.append(m.key, "token", token("r1", seq))
    await log.close(m.key, "done", done("r1"))
    assert log.events_written == 501
    assert log.batches_written <= 3, log.batches_written
    events = await read_all(log, m.key, 249)
    assert [p["seq"] for e, p in events if e == "token"] == list(range(250, 500))


async def test_a_write_redis_refuses_breaks_only_its_stream(
    make_log: MakeLog, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    log = make_log(flush_s=0.05)
    good, bad = meta("good"), meta("bad")
    for m in (good, bad):
        await log.open(m)
        await log.append(m.key, "token", token(m.request_id, 0))
    await asyncio.sleep(0.2)  # the first entries are stored
    # the bad stream's log key turns into a string: its XADDs fail (WRONGTYPE)
    await redis_client.set(f"{key_prefix}log:{bad.key}", "not a stream")
    for seq in range(1, 4):
        for m in (good, bad):
            await log.append(m.key, "token", token(m.request_id, seq))
    await asyncio.sleep(0.2)  # one round with both streams
    await redis_client.delete(f"{key_prefix}log:{bad.key}")
    for m in (good, bad):  # the good stream goes on; the bad one is not kept any more
        await log.append(m.key, "token", token(m.request_id, 4))
        await log.close(m.key, "done", done(m.request_id))
    assert await read_all(log, good.key) == [
        *(("token", token("good", s)) for s in range(5)),
        ("done", done("good")),
    ]
    with pytest.raises(StreamLost):  # the hole before the terminal entry shows
        await read_all(log, bad.key)
    assert await read_all(log, bad.key, 4) == [("done", done("bad"))]


async def test_reopening_a_key_while_it_is_queued_forgets_the_old_queue(
    make_log: MakeLog,
) -> None:
    log = make_log(flush_s=30)
    m = meta("r1")
    await log.open(m)
    await log.append(m.key, "token", token("r1", 0))
    await log.append(m.key, "token", {"old": True})  # waits for the (long) window
    await log.open(m)  # a new stream under the same key
    await log.append(m.key, "token", token("r1", 0))
    await log.close(m.key, "done", done("r1"))
    assert await read_all(log, m.key) == [("token", token("r1", 0)), ("done", done("r1"))]


async def test_shutdown_sends_what_is_queued(make_log: MakeLog, redis_url: str) -> None:
    log = make_log(flush_s=30)
    reader = make_log(flush_s=0, node_id="n2")
    m = meta("r1")
    await log.open(m)
    for seq in range(5):
        await log.append(m.key, "token", token("r1", seq))
    await log.aclose()  # the window is cut short, not waited out
    events = await asyncio.wait_for(take(reader, m.key, 5), 5)
    assert [p["seq"] for _e, p in events] == list(range(5))


async def take(log: RedisStreamLog, key: str, n: int) -> list[Any]:
    out: list[Any] = []
    async for event in log.tail(key, -1):
        out.append(event)
        if len(out) == n:
            break
    return out
