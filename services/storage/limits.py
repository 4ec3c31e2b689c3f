"""Per-user limits: accepted requests in a rolling window, open connections, streams.

In-memory here; ``services.storage.redis_limits`` shares the same counts between nodes.
Connections and streams are both *slots*: a user holds at most ``limit`` at once,
each taken with ``acquire(user, id)`` and given back with ``release(user, id)``.
A chat request takes a stream slot and counts against the rate limit in one step
(``StreamGate.enter``): a user whose slots are all held spends no request of the
window, and a request over the rate takes no slot.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Entry:
    """What ``StreamGate.enter`` did: took the slot and counted the request, or neither."""

    full: bool = False  # the user holds every stream slot
    retry_after: float | None = None  # over the rate: seconds until a request would pass

    @property
    def taken(self) -> bool:
        return not self.full and self.retry_after is None


ENTERED = Entry()


class StreamGate(Protocol):
    async def enter(self, user: str, slot_id: str) -> Entry:
        """Take a stream slot and count one request, both or neither."""
        ...

    async def release(self, user: str, slot_id: str) -> None:
        """Give back a slot ``enter`` took (the request stays counted)."""
        ...


class SlotCounter(Protocol):
    async def acquire(self, user: str, slot_id: str) -> bool:
        """Take a slot; ``False`` when the user already holds ``limit`` of them."""
        ...

    async def release(self, user: str, slot_id: str) -> None: ...


ConnectionCounter = SlotCounter  # open connections per user


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


class MemoryStreamGate:
    """``StreamGate`` of one node: its slots and rate limiter, used one after the other
    (nothing else runs between them: neither awaits anything)."""

    def __init__(self, slots: MemorySlots, rate: MemoryRateLimiter) -> None:
        self.slots = slots
        self._rate = rate

    async def enter(self, user: str, slot_id: str) -> Entry:
        if not await self.slots.acquire(user, slot_id):
            return Entry(full=True)
        retry_after = await self._rate.hit(user)
        if retry_after is None:
            return ENTERED
        await self.slots.release(user, slot_id)
        return Entry(retry_after=retry_after)

    async def release(self, user: str, slot_id: str) -> None:
        await self.slots.release(user, slot_id)
