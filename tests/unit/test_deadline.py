"""ReadDeadline: one lazily moved timer per stream instead of a timeout per read."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.upstream.deadline import ReadDeadline, sleep


async def guarded_read(watchdog: ReadDeadline, when: float, fut: asyncio.Future[str]) -> str:
    watchdog.arm(when)
    try:
        return await fut
    except asyncio.CancelledError:
        if watchdog.expired():
            raise TimeoutError from None
        raise
    finally:
        watchdog.disarm()


async def test_a_read_past_its_deadline_times_out() -> None:
    loop = asyncio.get_running_loop()
    watchdog = ReadDeadline(loop)
    with pytest.raises(TimeoutError):
        await guarded_read(watchdog, loop.time() + 0.05, loop.create_future())
    watchdog.close()


async def test_reads_that_keep_moving_the_deadline_never_time_out() -> None:
    loop = asyncio.get_running_loop()
    watchdog = ReadDeadline(loop)
    for _ in range(8):  # 8 x 30 ms, each read allowed 60 ms from its start
        fut: asyncio.Future[str] = loop.create_future()
        loop.call_later(0.03, fut.set_result, "data")
        assert await guarded_read(watchdog, loop.time() + 0.06, fut) == "data"
    watchdog.close()


async def test_the_timer_does_nothing_between_reads() -> None:
    loop = asyncio.get_running_loop()
    watchdog = ReadDeadline(loop)
    done: asyncio.Future[str] = loop.create_future()
    done.set_result("now")
    assert await guarded_read(watchdog, loop.time() + 0.02, done) == "now"
    await asyncio.sleep(0.05)  # the timer fires while no read is in progress
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    watchdog.close()


async def test_an_earlier_deadline_moves_the_timer_back() -> None:
    loop = asyncio.get_running_loop()
    watchdog = ReadDeadline(loop)
    watchdog.arm(loop.time() + 60)
    watchdog.disarm()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(
            guarded_read(watchdog, loop.time() + 0.05, loop.create_future()), timeout=2
        )
    watchdog.close()


async def test_a_real_cancel_is_not_mistaken_for_a_timeout() -> None:
    loop = asyncio.get_running_loop()
    watchdog = ReadDeadline(loop)
    task = asyncio.create_task(guarded_read(watchdog, loop.time() + 10, loop.create_future()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    watchdog.close()


async def test_a_cancel_racing_the_deadline_stays_a_cancel() -> None:
    loop = asyncio.get_running_loop()
    watchdog = ReadDeadline(loop)
    deadline = loop.time() + 0.01
    task = asyncio.create_task(guarded_read(watchdog, deadline, loop.create_future()))
    await asyncio.sleep(0)  # the read is waiting
    loop.call_at(deadline + 0.001, task.cancel)  # due right after the deadline's timer
    time.sleep(0.03)  # both are due in the same loop turn: deadline first, then the cancel
    with pytest.raises(asyncio.CancelledError):
        await task
    watchdog.close()


async def test_sleep_waits_and_can_be_cancelled() -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    await sleep(loop, 0.02)
    assert loop.time() - began >= 0.015
    task = asyncio.create_task(sleep(loop, 10))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
