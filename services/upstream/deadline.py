"""Cheap deadlines for a stream's reads (no timer and no loop look-up per read).

``asyncio.timeout_at`` around every read of a stream schedules a timer and looks up the
running loop twice per read; on Python 3.11 each look-up is a ``getpid()`` system call.
``ReadDeadline`` keeps one timer per stream that is moved forward lazily: when it fires
it either finds the deadline passed during a read (and cancels that read, which the
caller turns into ``TimeoutError`` with ``expired()``), or re-arms itself at the current
deadline.  A stream that reads every few milliseconds with a 60 s idle limit touches its
timer about once a minute.
"""

from __future__ import annotations

import asyncio
from typing import Any


class ReadDeadline:
    """Deadlines for awaits made between ``arm()`` and ``disarm()`` in one task."""

    __slots__ = ("_cancelling", "_expired", "_handle", "_loop", "_task", "_timer_at", "_when")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._when: float | None = None  # None: no read in progress
        self._cancelling = 0
        self._expired = False

    def arm(self, when: float) -> None:
        """A read starts; it must end by ``when`` (loop time)."""
        task = asyncio.current_task(self._loop)  # with the loop given: no look-up
        assert task is not None, "ReadDeadline.arm outside a task"
        self._task = task
        self._cancelling = task.cancelling()
        self._when = when
        self._expired = False
        if self._handle is None or when < self._timer_at:
            if self._handle is not None:
                self._handle.cancel()
            self._timer_at = when
            self._handle = self._loop.call_at(when, self._fire)

    def disarm(self) -> None:
        """The read ended (the timer stays, to be moved forward when it fires)."""
        self._when = None

    def expired(self) -> bool:
        """Whether the ``CancelledError`` being handled came from this deadline.

        Call it from ``except asyncio.CancelledError``: True means the caller should
        raise its timeout error instead; False means a real cancellation to re-raise.
        """
        task = self._task
        if not self._expired or task is None:
            return False
        self._expired = False
        return task.uncancel() <= self._cancelling

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._when = None

    def _fire(self) -> None:
        self._handle = None
        when = self._when
        if when is None:
            return  # between reads; the next arm() sets a new timer
        if self._loop.time() >= when:
            if self._task is not None and not self._task.done():
                self._expired = True
                self._task.cancel()
            return
        self._timer_at = when
        self._handle = self._loop.call_at(when, self._fire)


async def sleep(loop: asyncio.AbstractEventLoop, delay: float) -> None:
    """``asyncio.sleep`` for a caller that holds the loop (no loop look-up)."""
    future = loop.create_future()
    handle = loop.call_later(delay, _wake, future)
    try:
        await future
    finally:
        handle.cancel()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
