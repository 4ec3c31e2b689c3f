"""Room state in memory, the model's conversation, and room access rules."""

from __future__ import annotations

from typing import Any

import pytest

from events.core.rooms import room_allowed, room_channel
from events.transport.socketio_events import SioSink
from services.storage.rooms import (
    LocalConnection,
    Member,
    MemoryRoomStore,
    content_size,
    conversation,
    new_message,
    upstream_name,
)

ALICE = Member("alice", "Alice")
BOB = Member("bob", "Bob")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def store(limit: int = 5, max_age_s: float = 100, clock: Clock | None = None) -> MemoryRoomStore:
    return MemoryRoomStore(history_limit=limit, max_age_s=max_age_s, clock=clock or Clock())


async def test_members_are_users_listed_once_in_join_order() -> None:
    rooms = store()
    members, history = await rooms.join("lobby", "c1", ALICE)
    assert (members, history) == ([ALICE], [])
    assert (await rooms.join("lobby", "c2", BOB))[0] == [ALICE, BOB]
    assert (await rooms.join("lobby", "c3", ALICE))[0] == [ALICE, BOB]  # second tab
    assert (await rooms.join("lobby", "c3", ALICE))[0] == [ALICE, BOB]  # joined twice
    # alice's other tab stays; she is now listed by that tab's join, after bob
    assert await rooms.leave("lobby", "c1") == [BOB, ALICE]
    assert await rooms.leave("lobby", "c3") == [BOB]
    assert await rooms.leave("lobby", "c2") == []
    assert await rooms.members("lobby") == []
    assert len(rooms) == 0  # nothing left to keep


async def test_history_is_bounded_by_count_and_age() -> None:
    clock = Clock()
    rooms = store(limit=3, max_age_s=100, clock=clock)
    for i in range(5):
        clock.now += 10
        history = await rooms.append(
            "lobby", [new_message("lobby", ALICE, "user", f"m{i}", clock())]
        )
    assert [m["content"] for m in history] == ["m2", "m3", "m4"]
    clock.now += 85  # m2 is now 105 s old
    assert [m["content"] for m in await rooms.history("lobby")] == ["m3", "m4"]
    assert [m["content"] for m in (await rooms.join("lobby", "c1", BOB))[1]] == ["m3", "m4"]
    await rooms.leave("lobby", "c1")
    clock.now += 1000
    await rooms.maintain(list)
    assert len(rooms) == 0  # empty and aged out: dropped


async def test_append_returns_the_new_messages_last() -> None:
    rooms = store()
    await rooms.append("lobby", [new_message("lobby", BOB, "user", "earlier")])
    new = [new_message("lobby", ALICE, "user", "a"), new_message("lobby", ALICE, "user", "b")]
    history = await rooms.append("lobby", new)
    assert history[-2:] == new
    assert history[0]["content"] == "earlier"


async def test_connection_ids_are_known_while_connected() -> None:
    rooms = store()
    await rooms.connected("sid1")
    assert await rooms.is_connection("sid1")
    assert not await rooms.is_connection("sid2")
    await rooms.disconnected("sid1")
    assert not await rooms.is_connection("sid1")


def test_new_message_has_the_wire_shape() -> None:
    message = new_message("lobby", ALICE, "user", "hi", 12.3456)
    assert message["id"].startswith("msg_")
    assert message == {
        "room": "lobby",
        "id": message["id"],
        "user": {"id": "alice", "name": "Alice"},
        "role": "user",
        "content": "hi",
        "ts": 12.346,
    }
    assert new_message("lobby", ALICE, "user", "hi")["id"] != message["id"]


def msg(role: str, content: Any, name: str = "Alice") -> dict[str, Any]:
    return new_message("lobby", Member("u", name), role, content)


def test_conversation_keeps_the_newest_within_the_budget() -> None:
    history = [msg("user", "a" * 10), msg("assistant", "b" * 10), msg("user", "c" * 10)]
    assert [m["content"] for m in conversation(history, 30)] == ["a" * 10, "b" * 10, "c" * 10]
    assert [m["content"] for m in conversation(history, 29)] == ["b" * 10, "c" * 10]
    assert [m["content"] for m in conversation(history, 5)] == ["c" * 10]  # newest always
    assert conversation([], 10) == []


def test_conversation_names_users_only() -> None:
    history = [msg("system", "rules"), msg("user", "hi", "Zoë O'Neil"), msg("assistant", "yo")]
    assert conversation(history, 1000) == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "hi", "name": "Zo_O_Neil"},
        {"role": "assistant", "content": "yo"},
    ]
    assert upstream_name("???") is None
    assert upstream_name("x" * 100) == "x" * 64
    only_symbols = conversation([msg("user", "hi", "!!!")], 100)
    assert only_symbols == [{"role": "user", "content": "hi"}]


def test_content_size_counts_text_and_image_urls() -> None:
    parts = [
        {"type": "text", "text": "hello"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    assert content_size(parts) == 5 + len("data:image/png;base64,AAAA")
    assert content_size("abc") == 3
    assert content_size(None) == 0


@pytest.mark.parametrize(
    ("claims", "room", "allowed"),
    [
        ({}, "anything", True),
        ({"rooms": ["team-*", "support"]}, "team-red", True),
        ({"rooms": ["team-*", "support"]}, "support", True),
        ({"rooms": ["team-*", "support"]}, "lobby", False),
        ({"rooms": ["team-*"]}, "TEAM-red", False),  # case-sensitive
        ({"rooms": "team-?"}, "team-a", True),  # one pattern as a string
        ({"rooms": []}, "lobby", False),
        ({"rooms": 5}, "lobby", False),  # malformed claim: nothing allowed
        ({"rooms": [5, None]}, "lobby", False),
        ({"rooms": None}, "lobby", True),
    ],
)
def test_rooms_claim(claims: dict[str, Any], room: str, allowed: bool) -> None:
    assert room_allowed(claims, room) is allowed


def test_room_channels_never_look_like_sids_or_everyone() -> None:
    assert room_channel("lobby") == "room:lobby"
    with pytest.raises(ValueError, match="room name"):
        room_channel("")


class _Sio:
    async def emit(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("must not be called")


@pytest.mark.parametrize("target", ["", None])
def test_a_sink_refuses_an_empty_target(target: Any) -> None:
    with pytest.raises(ValueError, match="target"):
        SioSink(_Sio(), target)  # type: ignore[arg-type]


def test_local_connection_is_a_value() -> None:
    one = LocalConnection("c1", ALICE, frozenset({"a"}))
    assert one == LocalConnection("c1", ALICE, frozenset({"a"}))
