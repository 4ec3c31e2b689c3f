"""DurableRoomStore over the memory store, with an archive that answers, hangs or fails."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.storage.durable_rooms import DurableRoomStore
from services.storage.rooms import Member, MemoryRoomStore, Message, new_message

ALICE = Member("alice", "Alice")


class Archive:
    def __init__(self, stored: list[Message] | None = None) -> None:
        self.stored = stored or []
        self.archived: list[Message] = []
        self.lookups = 0
        self.fail = False

    def archive(self, messages: Sequence[Message]) -> None:
        self.archived.extend(messages)

    async def room_history(self, room: str, *, limit: int, since_ts: float) -> list[Message]:
        self.lookups += 1
        if self.fail:
            raise TimeoutError("the database did not answer")
        found = [m for m in self.stored if m["room"] == room and m["ts"] >= since_ts]
        return found[-limit:]


def store(archive: Archive, clock: list[float]) -> DurableRoomStore:
    live = MemoryRoomStore(history_limit=3, max_age_s=100, clock=lambda: clock[0])
    return DurableRoomStore(
        live, archive, history_limit=3, max_age_s=100, clock=lambda: clock[0], retry_s=10
    )


async def test_an_empty_room_is_restored_once_and_appends_are_archived() -> None:
    clock = [1000.0]
    old = [new_message("lobby", ALICE, "user", f"m{i}", ts=950 + i) for i in range(5)]
    archive = Archive([new_message("lobby", ALICE, "user", "too old", ts=800), *old])
    rooms = store(archive, clock)
    _members, history = await rooms.join("lobby", "c1", ALICE)
    assert [m["content"] for m in history] == ["m2", "m3", "m4"]  # the limit, oldest first
    _members, again = await rooms.join("lobby", "c2", ALICE)
    assert again == history
    assert archive.lookups == 1
    new = new_message("lobby", ALICE, "user", "m5", ts=1001)
    assert [m["content"] for m in await rooms.append("lobby", [new])] == ["m3", "m4", "m5"]
    assert archive.archived == [new]


async def test_the_first_message_of_a_forgotten_room_sees_its_restored_context() -> None:
    clock = [1000.0]
    archive = Archive([new_message("team", ALICE, "user", "earlier", ts=990)])
    rooms = store(archive, clock)
    new = new_message("team", ALICE, "user", "now", ts=1000)
    history = await rooms.append("team", [new])  # no join on this node before
    assert [m["content"] for m in history] == ["earlier", "now"]


async def test_an_archive_that_fails_is_not_asked_again_for_a_while() -> None:
    clock = [1000.0]
    archive = Archive([new_message("lobby", ALICE, "user", "kept", ts=999)])
    archive.fail = True
    rooms = store(archive, clock)
    assert (await rooms.join("lobby", "c1", ALICE))[1] == []
    assert (await rooms.join("elsewhere", "c1", ALICE))[1] == []
    assert archive.lookups == 1  # the second join did not wait on a failing database
    archive.fail = False
    clock[0] += 11
    assert [m["content"] for m in (await rooms.join("lobby", "c2", ALICE))[1]] == ["kept"]


@pytest.mark.parametrize("live_first", [True, False])
async def test_a_room_another_node_restored_meanwhile_is_not_doubled(live_first: bool) -> None:
    clock = [1000.0]
    stored = new_message("lobby", ALICE, "user", "stored", ts=999)
    archive = Archive([stored])
    rooms = store(archive, clock)
    if live_first:
        await rooms.live.append("lobby", [stored])
    joins = await asyncio.gather(rooms.join("lobby", "c1", ALICE), rooms.join("lobby", "c2", ALICE))
    assert [[m["content"] for m in history] for _members, history in joins] == [["stored"]] * 2
    assert [m["content"] for m in await rooms.history("lobby")] == ["stored"]
    assert archive.lookups == (0 if live_first else 1)


class SharedLock:
    """What RedisRestoreLock does, for nodes that share one live store in these tests."""

    def __init__(self) -> None:
        self.rooms: set[str] = set()

    async def acquire(self, room: str) -> bool:
        if room in self.rooms:
            return False
        self.rooms.add(room)
        return True

    async def release(self, room: str) -> None:
        self.rooms.discard(room)

    async def held(self, room: str) -> bool:
        return room in self.rooms


class SlowArchive(Archive):
    async def room_history(self, room: str, *, limit: int, since_ts: float) -> list[Message]:
        await asyncio.sleep(0.2)
        return await super().room_history(room, limit=limit, since_ts=since_ts)


def nodes(archive: Archive, clock: list[float]) -> list[DurableRoomStore]:
    """Two nodes over one live store (as with Redis) and one restore lock."""
    live = MemoryRoomStore(history_limit=3, max_age_s=100, clock=lambda: clock[0])
    lock = SharedLock()
    return [
        DurableRoomStore(
            live, archive, history_limit=3, max_age_s=100, clock=lambda: clock[0], lock=lock
        )
        for _ in range(2)
    ]


async def test_nodes_rejoined_at_once_restore_a_room_once() -> None:
    clock = [1000.0]
    stored = [new_message("lobby", ALICE, "user", f"m{i}", ts=990 + i) for i in range(2)]
    archive = SlowArchive(stored)
    one, two = nodes(archive, clock)
    (_m1, first), (_m2, second) = await asyncio.gather(
        one.join("lobby", "c1", ALICE), two.join("lobby", "c2", ALICE)
    )
    assert [m["content"] for m in first] == ["m0", "m1"]
    assert second == first  # not doubled in the shared live store
    assert archive.lookups == 1


async def test_a_new_room_does_not_keep_the_other_node_waiting() -> None:
    clock = [1000.0]
    archive = SlowArchive()
    one, two = nodes(archive, clock)
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(one.join("new", "c1", ALICE), two.join("new", "c2", ALICE))
    assert [history for _members, history in results] == [[], []]
    assert loop.time() - started < 1.0  # the loser stops waiting once the lookup is over
