"""Per-user limits: accepted requests in a rolling window, open connections, streams.

In-memory here; ``services.storage.redis_limits`` shares the same counts between nodes.
Connections and streams are both *slots*: a user holds at most ``limit`` at once,
each taken with ``acquire(user, id)`` and given back with ``release(user, id)``.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Protocol


class RateLimiter(Protocol):
    async def hit(self, user: str) -> float | None:
        """Count one request; ``None`` if allowed, else seconds until one would be."""
        ...


class SlotCounter(Protocol):
    async def acquire(self, user: str, slot_id: str) -> bool:
        """Take a slot; ``False`` when the user already holds ``limit`` of them."""
        ...

    async def release(self, user: str, slot_id: str) -> None: ...


ConnectionCounter = SlotCounter  # open connections per user
StreamCounter = SlotCounter  # generations in flight per user


class MemoryRateLimiter:
    """At most ``limit`` accepted requests per user in any ``window_s`` seconds."""

    def __init__(self, limit: int, window_s: float = 60.0) -> None:
        self._limit = limit
        self._window = window_s
        self._hits: dict[str, deque[float]] = {}

    async def hit(self, user: str) -> float | None:
        now = time.monotonic()
        hits = self._hits.setdefault(user, deque())
        cutoff = now - self._window
        while hits and hits[0] <= cutoff:
            hits.popleft()
        if len(hits) >= self._limit:
            return max(hits[0] + self._window - now, 0.001)
        hits.append(now)
        if len(self._hits) > 10_000:
            self._prune(cutoff)
        return None

    def _prune(self, cutoff: float) -> None:
        for user in [u for u, h in self._hits.items() if not h or h[-1] <= cutoff]:
            del self._hits[user]


class MemorySlots:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._conns: dict[str, set[str]] = {}

    async def acquire(self, user: str, slot_id: str) -> bool:
        conns = self._conns.setdefault(user, set())
        if slot_id in conns:
            return True
        if len(conns) >= self._limit:
            return False
        conns.add(slot_id)
        return True

    async def release(self, user: str, slot_id: str) -> None:
        conns = self._conns.get(user)
        if conns is not None:
            conns.discard(slot_id)
            if not conns:
                del self._conns[user]

    def counts(self) -> Counter[str]:
        return Counter({user: len(conns) for user, conns in self._conns.items()})


MemoryConnectionCounter = MemorySlots
MemoryStreamCounter = MemorySlots
