"""Daily budgets: limits and claims, UTC days, counters in memory and in Redis."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from services.budget import (
    BudgetExceeded,
    BudgetLimits,
    Budgets,
    next_midnight,
    seconds_to_midnight,
    utc_day,
)
from services.storage.budget_counters import MemoryCounters, RedisCounters


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_day_is_a_utc_day_and_retry_after_points_at_its_end() -> None:
    assert utc_day(at("2026-12-04T23:59:59")) == "2026-12-04"
    assert utc_day(at("2026-12-05T00:00:00")) == "2026-12-05"
    assert next_midnight(at("2026-12-04T18:00:00")) == at("2026-12-05T00:00:00")
    assert seconds_to_midnight(at("2026-12-04T23:00:00")) == 3600
    assert seconds_to_midnight(at("2026-12-04T23:59:59.9")) == 1  # never 0


def test_the_budget_claim_overrides_the_settings_field_by_field() -> None:
    defaults = BudgetLimits(500, 1.5)
    assert defaults.overridden_by(None) == defaults
    assert defaults.overridden_by({"tokens_per_day": 10}) == BudgetLimits(10, 1.5)
    assert defaults.overridden_by({"cost_per_day": 0}) == BudgetLimits(500, None)  # 0 = none
    for junk in ("lots", {"tokens_per_day": "9"}, {"tokens_per_day": -1}, {"x": True}):
        assert defaults.overridden_by(junk) == defaults
    assert defaults.overridden_by({"tokens_per_day": True}) == defaults
    assert BudgetLimits().to_wire() == {}
    assert BudgetLimits(7, 0.25).to_wire() == {"tokens_per_day": 7, "cost_per_day": 0.25}
    assert BudgetLimits(10).spent(10, 0) is True
    assert BudgetLimits(10).spent(9, 99.0) is False
    assert BudgetLimits(None, 1.0).spent(10**9, 1.0) is True


async def test_admit_meter_and_settle_in_memory() -> None:
    clock = Clock(at("2026-12-04T12:00:00"))
    budgets = Budgets(BudgetLimits(100), MemoryCounters(), clock=clock)
    assert await budgets.admit("bob", {"tokens_per_day": 0}) is None  # no budget: no meter
    meter = await budgets.admit("alice")
    assert meter is not None
    assert await meter.spend(60) is True
    assert await meter.spend(39) is True
    assert await meter.spend(1) is False  # 100 of 100: spent
    await meter.settle(prompt_tokens=20, completion_tokens=50, cost=0.01)
    assert await budgets.spent("alice") == (70, 0.01)  # the real usage replaced the count
    meter = await budgets.admit("alice")
    assert meter is not None
    assert await meter.spend(40) is False
    await meter.settle(0, None, 0.0)  # no usage reported: the relayed count stays
    with pytest.raises(BudgetExceeded) as refused:
        await budgets.admit("alice")
    assert refused.value.retry_after == 12 * 3600
    assert await budgets.admit("carol") is not None  # others are unaffected
    clock.now = at("2026-12-05T00:00:01")  # a new UTC day: a new budget
    assert await budgets.admit("alice") is not None


async def test_a_counter_is_seeded_from_the_ledger_once_per_day() -> None:
    asked: list[tuple[str, str]] = []

    async def ledger(user: str, day: str) -> tuple[int, float]:
        asked.append((user, day))
        return 90, 0.0

    clock = Clock(at("2026-12-04T12:00:00"))
    budgets = Budgets(BudgetLimits(100), MemoryCounters(), ledger=ledger, clock=clock)
    meter = await budgets.admit("alice")  # a restarted node knows what was spent today
    assert meter is not None
    assert await meter.spend(10) is False
    with pytest.raises(BudgetExceeded):
        await budgets.admit("alice")
    assert asked == [("alice", "2026-12-04")]


async def test_a_ledger_that_does_not_answer_admits_and_is_asked_again_later() -> None:
    calls = 0

    async def ledger(user: str, day: str) -> tuple[int, float]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TimeoutError("the database did not answer")
        return 500, 0.0

    clock = Clock(at("2026-12-04T12:00:00"))
    budgets = Budgets(BudgetLimits(100), MemoryCounters(), ledger=ledger, clock=clock)
    assert await budgets.admit("alice") is not None
    assert await budgets.admit("alice") is not None  # not asked again right away
    assert calls == 1
    clock.now += 31
    with pytest.raises(BudgetExceeded):
        await budgets.admit("alice")


async def test_memory_counters_keep_yesterday_for_streams_that_cross_midnight() -> None:
    counters = MemoryCounters()
    await counters.add("alice", "2026-12-04", 5, 0.0, 0)
    await counters.add("alice", "2026-12-05", 1, 0.0, 0)
    assert await counters.add("alice", "2026-12-04", 5, 0.0, 0) == (10, 0.0)
    await counters.add("alice", "2026-12-06", 1, 0.0, 0)
    assert await counters.add("alice", "2026-12-04", 0, 0.0, 0) == (0, 0.0)  # gone


@pytest.mark.redis
async def test_redis_counters_are_shared_seeded_once_and_expire_at_midnight(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    now = time.time()  # keys expire at a real midnight: it must lie ahead
    today = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    one = RedisCounters(redis_client, prefix=key_prefix, timeout_s=2)
    two = RedisCounters(redis_client, prefix=key_prefix, timeout_s=2)
    assert await one.get("alice", today) is None
    await one.seed("alice", today, 40, 0.5, next_midnight(now))
    await two.seed("alice", today, 40, 0.5, next_midnight(now))  # once only
    assert await two.add("alice", today, 10, 0.000001, next_midnight(now)) == (
        50,
        0.500001,
    )
    assert await one.get("alice", today) == (50, 0.500001)
    ttl_at = await redis_client.expiretime(f"{key_prefix}budget:{today}:alice")
    assert next_midnight(now) <= ttl_at <= next_midnight(now) + 120


@pytest.mark.redis
async def test_redis_counters_count_locally_while_redis_is_unreachable() -> None:
    from bench.procs import free_port

    client = aioredis.from_url(f"redis://127.0.0.1:{free_port()}", socket_connect_timeout=0.2)
    try:
        counters = RedisCounters(client, prefix="x:", timeout_s=0.5)
        assert await counters.add("alice", "2026-12-04", 3, 0.0, 0) == (3, 0.0)
        assert await counters.add("alice", "2026-12-04", 4, 0.0, 0) == (7, 0.0)
        assert await counters.get("alice", "2026-12-04") == (7, 0.0)
        started = asyncio.get_running_loop().time()
        assert await counters.add("alice", "2026-12-04", 1, 0.0, 0) == (8, 0.0)
        assert asyncio.get_running_loop().time() - started < 0.1  # no new attempt yet
    finally:
        await client.aclose()
