"""In-memory limits (services/storage/limits.py)."""

from __future__ import annotations

import asyncio

from services.storage.limits import MemoryRateLimiter, MemorySlots


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
