"""The Redis stream log when Redis is out: live delivery never waits on it, and a resume
never gets a silent gap.  These use a private ``redis-server`` (paused or absent)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from bench.procs import free_port
from services.storage.redis_streamlog import RedisStreamLog
from services.storage.streamlog import StreamLost, StreamMeta
from tests.redis_server import redis_server_process

pytestmark = pytest.mark.redis

DONE = {"request_id": "r1", "finish_reason": "stop"}


def token(seq: int) -> dict[str, object]:
    return {"request_id": "r1", "seq": seq, "content": f"t{seq} "}


@pytest.fixture
def private_redis() -> Iterator[str]:
    try:
        with redis_server_process() as (url, _proc):
            yield url
    except RuntimeError as exc:  # no redis-server binary on this machine
        pytest.skip(str(exc))


async def test_with_redis_unreachable_a_stream_still_runs_but_is_not_kept() -> None:
    client = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    log = RedisStreamLog(
        client, prefix="t:", node_id="n1", retention_s=5, live_ttl_s=60, op_timeout_s=0.5
    )
    meta = StreamMeta("r1|alice", "r1", "alice")
    started = time.monotonic()
    await log.open(meta)  # no exception: the chat goes on, live only
    for seq in range(100):
        await log.append(meta.key, "token", token(seq))
    await log.close(meta.key, "done", DONE)
    assert time.monotonic() - started < 10  # bounded, not hanging on Redis
    await log.aclose()
    await client.aclose()


async def test_a_write_that_fails_mid_stream_leaves_a_gap_a_reader_reports(
    private_redis: str,
) -> None:
    client = aioredis.from_url(private_redis)
    admin = aioredis.from_url(private_redis)
    log = RedisStreamLog(
        client, prefix="t:", node_id="n1", retention_s=30, live_ttl_s=60, op_timeout_s=0.3
    )
    meta = StreamMeta("r1|alice", "r1", "alice")
    try:
        await log.open(meta)
        for seq in range(3):
            await log.append(meta.key, "token", token(seq))
        await asyncio.sleep(0.2)  # stored
        await admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
        for seq in range(3, 6):
            await log.append(meta.key, "token", token(seq))
        await asyncio.sleep(1.8)  # the writes timed out: the rest of the stream is not kept
        await log.append(meta.key, "token", token(6))
        started = time.monotonic()
        await log.close(meta.key, "done", DONE)  # the terminal entry is stored again
        assert time.monotonic() - started < 10  # bounded
        got: list[tuple[str, object]] = []

        async def read_all() -> None:
            async for event in log.tail(meta.key, -1):
                got.append(event)

        with pytest.raises(StreamLost) as lost:
            await read_all()
        assert lost.value.reason == "trimmed"
        assert got == [("token", token(s)) for s in range(3)]  # never a silent gap
        # from past the gap, only the terminal is left: that is complete
        assert [e async for e in log.tail(meta.key, 6)] == [("done", DONE)]
    finally:
        await log.aclose()
        await client.aclose()
        await admin.aclose()
