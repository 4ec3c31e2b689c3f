"""The benchmark's Redis accounting: ``INFO commandstats`` deltas around a scenario."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from bench import redisstats
from tests.redis_server import redis_server_process


def test_parse_keeps_calls_and_usec_of_every_command() -> None:
    info = {
        "cmdstat_xadd": {"calls": 7, "usec": 70, "usec_per_call": 10.0},
        "cmdstat_publish": {"calls": 2, "usec": 4, "usec_per_call": 2.0},
        "errorstat_ERR": {"count": 1},
    }
    assert redisstats.parse_commandstats(info) == {"xadd": (7, 70), "publish": (2, 4)}


def test_delta_counts_what_ran_in_between_without_the_snapshots_info() -> None:
    before = {"xadd": (10, 100), "info": (4, 40), "ping": (3, 3)}
    after = {"xadd": (25, 260), "info": (5, 52), "ping": (3, 3), "publish": (2, 6)}
    ops = redisstats.delta(before, after)
    # the INFO that took the second snapshot is not the target's; unchanged PING is gone
    assert ops == {"xadd": (15, 160), "publish": (2, 6)}
    assert list(ops) == ["xadd", "publish"]  # most calls first


def test_summarise_gives_operations_per_token() -> None:
    summary = redisstats.summarise({"xadd": (30, 300), "publish": (10, 20)}, tokens=100)
    assert summary["redis_ops"] == {"xadd": 30, "publish": 10}
    assert summary["redis_usec"] == {"xadd": 300, "publish": 20}
    assert summary["redis_ops_total"] == 40
    assert summary["redis_ops_per_token"] == pytest.approx(0.4)
    assert redisstats.summarise({}, tokens=0)["redis_ops_per_token"] is None


def test_top_orders_by_calls_then_name() -> None:
    ops = {"zadd": 3, "xadd": 9, "hset": 3, "pexpire": 1}
    assert redisstats.top(ops, 3) == [("xadd", 9.0), ("hset", 3.0), ("zadd", 3.0)]


@pytest.mark.redis
async def test_commandstats_of_a_real_redis_counts_each_pipelined_command() -> None:
    with redis_server_process() as (url, _proc):
        stats = redisstats.CommandStats(url)
        client = aioredis.Redis.from_url(url)
        try:
            await client.ping()  # its connection (and HELLO) comes before the scenario
            before = await stats.snapshot()
            async with client.pipeline(transaction=False) as pipe:
                for index in range(3):
                    pipe.xadd("bench:test", {"i": str(index)})
                pipe.publish("bench:channel", "x")
                await pipe.execute()
            ops = redisstats.delta(before, await stats.snapshot())
        finally:
            await client.aclose()
            await stats.close()
    # exactly the scenario's commands: no snapshot INFO, no HELLO of a new connection
    assert {name: calls for name, (calls, _usec) in ops.items()} == {"xadd": 3, "publish": 1}
