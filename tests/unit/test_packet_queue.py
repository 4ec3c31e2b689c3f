"""PacketQueue behaves as asyncio.Queue does for Engine.IO's uses."""

from __future__ import annotations

import asyncio

import pytest

from events.transport.internals.packet_queue import PacketQueue


async def test_fifo_put_get_and_nowait() -> None:
    queue = PacketQueue()
    assert queue.empty()
    assert queue.qsize() == 0
    assert not queue.full()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    await queue.put("a")
    queue.put_nowait("b")
    assert queue.qsize() == 2
    assert await queue.get() == "a"
    assert queue.get_nowait() == "b"
    assert queue.empty()


async def test_get_waits_for_a_put() -> None:
    queue = PacketQueue()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put_nowait(1)
    assert await asyncio.wait_for(getter, 1) == 1


async def test_waiting_getters_are_served_in_order() -> None:
    queue = PacketQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("x")
    queue.put_nowait("y")
    assert await asyncio.wait_for(asyncio.gather(first, second), 1) == ["x", "y"]


async def test_a_cancelled_getter_leaves_the_item_for_the_next() -> None:
    queue = PacketQueue()
    doomed = asyncio.create_task(queue.get())
    other = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("only")  # wakes `doomed` first ...
    doomed.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert await asyncio.wait_for(other, 1) == "only"


async def test_wait_for_timeout_on_get_leaves_no_getter_behind() -> None:
    queue = PacketQueue()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.get(), 0.01)
    queue.put_nowait(5)
    assert await asyncio.wait_for(queue.get(), 1) == 5


async def test_join_waits_until_every_item_is_done() -> None:
    queue = PacketQueue()
    await queue.join()  # nothing unfinished: returns at once
    queue.put_nowait(1)
    queue.put_nowait(2)
    joiner = asyncio.create_task(queue.join())
    queue.get_nowait()
    queue.task_done()
    await asyncio.sleep(0)
    assert not joiner.done()
    queue.get_nowait()
    queue.task_done()
    await asyncio.wait_for(joiner, 1)
    with pytest.raises(ValueError, match="too many"):
        queue.task_done()
