"""GenerationRegistry: detach with a grace period, attach on resume, stop before start."""

from __future__ import annotations

import asyncio

from services.generations import Generation, GenerationRegistry, StopReason


async def forever(gen: Generation) -> None:
    gen.started = True
    await asyncio.sleep(3600)


def running(registry: GenerationRegistry, key: str, conn_id: str | None) -> Generation:
    gen = Generation(key, key, "alice", conn_id)
    gen.task = asyncio.create_task(forever(gen))
    registry.add(gen)
    return gen


async def settle(gen: Generation) -> None:
    assert gen.task is not None
    await asyncio.wait([gen.task], timeout=2)


async def test_a_detached_generation_is_stopped_after_the_grace_period() -> None:
    registry = GenerationRegistry()
    gen = running(registry, "k1", "c1")
    await asyncio.sleep(0)
    abandoned: list[Generation] = []
    assert registry.detach_connection("c1", 0.05, abandoned.append) == 1
    assert registry.count_for_connection("c1") == 0
    await settle(gen)
    assert gen.stop_reason is StopReason.ABANDONED
    assert abandoned == [gen]


async def test_attach_stops_the_grace_timer_and_moves_the_generation() -> None:
    registry = GenerationRegistry()
    gen = running(registry, "k1", "c1")
    await asyncio.sleep(0)
    registry.detach_connection("c1", 0.05)
    registry.attach(gen, "c2")
    await asyncio.sleep(0.15)
    assert gen.stop_reason is None
    assert registry.for_connection("c2") == [gen]
    # the old connection's late close does not touch it any more
    assert registry.detach_connection("c1", 0.01) == 0
    registry.stop_connection("c1", StopReason.DISCONNECT)
    await asyncio.sleep(0.05)
    assert gen.stop_reason is None
    registry.stop_connection("c2", StopReason.DISCONNECT)
    await settle(gen)
    assert gen.stop_reason is StopReason.DISCONNECT


async def test_attach_from_another_node_leaves_no_local_owner() -> None:
    registry = GenerationRegistry()
    gen = running(registry, "k1", "c1")
    await asyncio.sleep(0)
    registry.attach(gen, None)  # resumed elsewhere while c1 still looked alive
    assert registry.count_for_connection("c1") == 0
    registry.detach(gen, 0.05)  # the other node lost its client
    await settle(gen)
    assert gen.stop_reason is StopReason.ABANDONED


async def test_a_stop_before_the_task_started_is_seen_when_it_starts() -> None:
    gen = Generation("k1", "k1", "alice", "c1")
    seen: list[StopReason | None] = []

    async def run() -> None:
        gen.started = True
        seen.append(gen.stop_reason)

    gen.task = asyncio.create_task(run())
    assert gen.stop(StopReason.DISCONNECT) is True  # before its first step
    assert gen.stop(StopReason.CANCEL) is True  # already stopping: the first reason wins
    await gen.task
    assert seen == [StopReason.DISCONNECT]
    assert not gen.task.cancelled()
