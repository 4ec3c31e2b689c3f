"""A batched background writer: ``put`` never waits; the database is written off the hot path.

Items wait in a bounded queue and go to ``write`` in batches.  A failed or timed-out
batch is put back and retried with backoff until it succeeds, so nothing is lost while
the process lives; only when ``max_pending`` items wait does the oldest get dropped,
with an error in the log.  ``aclose`` gives the queue a last chance to drain.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class BatchWriter(Generic[T]):
    def __init__(
        self,
        name: str,
        write: Callable[[Sequence[T]], Awaitable[None]],
        *,
        max_pending: int = 100_000,
        batch_size: int = 500,
        gather_s: float = 0.05,
        retry_max_s: float = 5.0,
        ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self._write = write
        self._ready = ready
        self._max_pending = max_pending
        self._batch_size = batch_size
        self._gather_s = gather_s
        self._retry_max_s = retry_max_s
        self._items: deque[T] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0
        self.dropped = 0
        self.failing = False
        self._busy = False
        self._in_flight = 0  # items of the batch being written now

    @property
    def pending(self) -> int:
        """Items waiting for a write (what ``max_pending`` bounds)."""
        return len(self._items)

    @property
    def unwritten(self) -> int:
        """Items not written yet: waiting, or in the batch being written now."""
        return len(self._items) + self._in_flight

    def put(self, item: T) -> None:
        if len(self._items) >= self._max_pending:
            self._items.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.error(
                    "%s: %d items wait for the database (the limit); dropped %d so far",
                    self.name,
                    self._max_pending,
                    self.dropped,
                )
        self._items.append(item)
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"writer:{self.name}")

    async def flushed(self, timeout_s: float) -> bool:
        """Wait until nothing is pending (tests, shutdown); False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._items or self._busy:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def _run(self) -> None:
        if self._ready is not None:
            await self._ready()
        backoff = 0.1
        while True:
            if not self._items:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                if len(self._items) < self._batch_size and not self._closing:
                    await asyncio.sleep(self._gather_s)  # let a burst form one batch
                continue
            batch = [self._items.popleft() for _ in range(min(self._batch_size, len(self._items)))]
            self._busy = True
            self._in_flight = len(batch)
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                self._items.extendleft(reversed(batch))
                raise
            except Exception as exc:
                self._items.extendleft(reversed(batch))
                if not self.failing:
                    logger.warning(
                        "%s: writing %d item(s) failed (%s); retrying",
                        self.name,
                        len(batch),
                        exc,
                    )
                self.failing = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._retry_max_s)
                continue
            finally:
                self._busy = False
                self._in_flight = 0
            self.written += len(batch)
            if self.failing:
                logger.warning(
                    "%s: the database answers again; %d pending", self.name, self.pending
                )
            self.failing = False
            backoff = 0.1

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Write what is pending for up to ``timeout_s``, then stop (and say what is lost)."""
        self._closing = True
        self._wake.set()
        task = self._task
        if task is None:
            return
        done, _pending = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._items:
            logger.error("%s: %d item(s) not written at shutdown", self.name, len(self._items))
