"""TailRegistry: who is fed a request from the log, and for how long live copies skip them."""

from __future__ import annotations

import asyncio

from events.core.tails import TailRegistry


def tok(seq: int, room: str | None = None) -> dict[str, object]:
    data: dict[str, object] = {"request_id": "r1", "seq": seq, "content": "x"}
    if room is not None:
        data["room"] = room
    return data


DONE = {"request_id": "r1", "finish_reason": "stop"}


async def test_a_replaying_sid_is_skipped_for_that_request_only() -> None:
    tails = TailRegistry()
    assert not tails
    tails.add("r1", "lobby", "sid-a")
    assert tails.skip("token", tok(1, "lobby"), None) == ["sid-a"]
    assert tails.skip("token", tok(1, "lobby"), "sender") == ["sid-a", "sender"]
    assert tails.skip("token", tok(1, "lobby"), ["s1", "s2"]) == ["sid-a", "s1", "s2"]
    assert tails.skip("token", tok(1), None) is None  # same id, no room: another stream
    assert tails.skip("token", {"request_id": "r2", "seq": 0}, None) is None
    assert tails.skip("message", tok(1, "lobby"), None) is None  # not a stream event
    assert tails.skip("token", "not a dict", "x") == "x"


async def test_the_skip_outlives_the_replay_until_the_live_terminal_passes() -> None:
    tails = TailRegistry(linger_s=30)
    tails.add("r1", None, "sid-a")
    tails.finish("r1", None, "sid-a")  # the replay read the terminal from the log first
    assert tails.skip("token", tok(9), None) == ["sid-a"]  # a late live copy
    assert tails.skip("done", DONE, None) == ["sid-a"]  # the late live terminal, skipped too
    assert not tails  # and then the entry is gone
    assert tails.skip("token", tok(0), None) is None


async def test_when_the_live_terminal_came_first_the_entry_ends_with_the_replay() -> None:
    tails = TailRegistry(linger_s=30)
    tails.add("r1", None, "sid-a")
    assert tails.skip("done", DONE, None) == ["sid-a"]
    assert tails  # the replay still runs
    tails.finish("r1", None, "sid-a")
    assert not tails


async def test_a_lingering_skip_ends_after_linger_s() -> None:
    tails = TailRegistry(linger_s=0.05)
    tails.add("r1", None, "sid-a")
    tails.finish("r1", None, "sid-a")
    assert tails
    await asyncio.sleep(0.15)
    assert not tails


async def test_a_new_request_with_the_same_id_is_not_hidden() -> None:
    tails = TailRegistry(linger_s=30)
    tails.add("r1", None, "sid-a")
    tails.finish("r1", None, "sid-a")
    tails.forget("r1", None)
    assert tails.skip("token", tok(0), None) is None
    assert not tails


async def test_two_replays_to_one_sid_keep_the_skip_until_both_end() -> None:
    tails = TailRegistry(linger_s=30)
    tails.add("r1", None, "sid-a")
    tails.add("r1", None, "sid-a")
    tails.add("r1", None, "sid-b")
    tails.finish("r1", None, "sid-a")
    assert sorted(tails.skip("token", tok(1), None)) == ["sid-a", "sid-b"]
    assert tails.skip("done", DONE, None) is not None
    tails.finish("r1", None, "sid-a")
    tails.finish("r1", None, "sid-b")
    tails.finish("r1", None, "sid-b")  # one too many: harmless
    assert not tails
