"""In-memory limits (services/storage/limits.py)."""

from __future__ import annotations

import asyncio

from services.storage.limits import ENTERED, MemoryRateLimiter, MemorySlots, MemoryStreamGate


async def test_rate_limiter_rolling_window() -> None:
    limiter = MemoryRateLimiter(2, window_s=0.3)
    assert await limiter.hit("a") is None
    assert await limiter.hit("a") is None
    wait = await limiter.hit("a")
    assert wait is not None
    assert 0 < wait <= 0.3
    assert await limiter.hit("b") is None
    await asyncio.sleep(0.35)
    assert await limiter.hit("a") is None


async def test_slots() -> None:
    slots = MemorySlots(2)
    assert await slots.acquire("a", "1")
    assert await slots.acquire("a", "2")
    assert await slots.acquire("a", "2")  # taking a slot one holds is not a second one
    assert not await slots.acquire("a", "3")
    assert await slots.acquire("b", "1")
    await slots.release("a", "1")
    await slots.release("a", "unknown")
    assert await slots.acquire("a", "3")
    assert slots.counts() == {"a": 2, "b": 1}


async def test_stream_gate_takes_a_slot_and_counts_a_request_or_neither() -> None:
    slots = MemorySlots(1)
    gate = MemoryStreamGate(slots, MemoryRateLimiter(2, window_s=60))
    assert await gate.enter("a", "1") == ENTERED
    full = await gate.enter("a", "2")
    assert (full.full, full.retry_after, full.taken) == (True, None, False)
    await gate.release("a", "1")
    assert await gate.enter("a", "3") == ENTERED  # the refusal above counted nothing
    await gate.release("a", "3")
    over = await gate.enter("a", "4")
    assert not over.full
    assert over.retry_after is not None
    assert 0 < over.retry_after <= 60
    assert slots.counts() == {}  # a request over the rate holds no slot
