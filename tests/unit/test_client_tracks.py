"""llm_relay_client.tracks: each event of a request delivered once, in order."""

from __future__ import annotations

from typing import Any

import pytest

from llm_relay_client import ChatError, Done, Token
from llm_relay_client.cli import exit_code
from llm_relay_client.rooms import Room
from llm_relay_client.stream import Stream
from llm_relay_client.tracks import Track, Tracks


class Host:
    """Stands in for the client behind a Stream or a Room (the network side)."""

    async def _begin(self, stream: Stream) -> None:
        return None

    async def cancel(self, request_id: str) -> None:
        return None

    async def leave(self, room: str) -> None:
        return None

    def stream(self, messages: Any, **options: Any) -> Stream:
        raise NotImplementedError


def token(seq: int, rid: str = "r1", room: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"request_id": rid, "seq": seq, "content": f"t{seq} "}
    if room is not None:
        payload["room"] = room
    return payload


def done(rid: str = "r1", room: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"request_id": rid, "finish_reason": "stop", "usage": {}}
    if room is not None:
        payload["room"] = room
    return payload


def setup(room: str | None = None) -> tuple[Tracks, Stream, list[Track], dict[str, Room]]:
    rooms: dict[str, Room] = {}
    healed: list[Track] = []
    tracks = Tracks(rooms, healed.append)
    stream = Stream(Host(), "r1", room, {"request_id": "r1", "messages": []})
    tracks.add(stream)
    return tracks, stream, healed, rooms


async def read_all(stream: Stream) -> str:
    return "".join([text async for text in stream])


async def test_repeats_are_dropped_and_the_terminal_event_comes_once() -> None:
    tracks, stream, healed, _ = setup()
    for seq in (0, 1, 1, 0, 2):
        tracks.on_event("token", token(seq))
    tracks.on_event("done", done())
    tracks.on_event("token", token(3))
    tracks.on_event("done", done())
    assert await read_all(stream) == "t0 t1 t2 "
    assert stream.done is not None
    assert tracks.last_done == stream.done
    assert healed == []
    assert len(tracks) == 0


async def test_a_gap_asks_for_a_resume_and_is_not_delivered() -> None:
    tracks, stream, healed, _ = setup()
    tracks.on_event("token", token(0))
    tracks.on_event("token", token(3))  # 1 and 2 went missing
    assert [t.request_id for t in healed] == ["r1"]
    for seq in (1, 2, 3):  # the replay
        tracks.on_event("token", token(seq))
    tracks.on_event("done", done())
    assert await read_all(stream) == "t0 t1 t2 t3 "


async def test_in_a_room_a_terminal_event_during_a_resume_is_held() -> None:
    tracks, stream, _, rooms = setup("lobby")
    rooms["lobby"] = Room(Host(), "lobby")
    tracks.on_event("token", token(0, room="lobby"))
    track = tracks.open()[0]
    track.resuming = True
    tracks.on_event("done", done(room="lobby"))  # live, maybe ahead of the replay
    assert tracks.is_open(track)
    assert track.deferred is not None
    track.resuming = False
    tracks.on_event("token", token(1, room="lobby"))  # the replay
    tracks.on_event("done", done(room="lobby"))
    assert await read_all(stream) == "t0 t1 "


async def test_an_error_event_is_raised_once() -> None:
    tracks, stream, _, _ = setup()
    tracks.on_event("token", token(0))
    error = {"request_id": "r1", "code": "upstream_error", "message": "x", "retryable": True}
    tracks.on_event("error", error)
    assert await stream.__anext__() == "t0 "
    with pytest.raises(ChatError) as caught:
        await stream.__anext__()
    assert (caught.value.code, caught.value.retryable) == ("upstream_error", True)
    assert [text async for text in stream] == []


async def test_other_members_requests_are_followed_only_in_joined_rooms() -> None:
    tracks, _stream, _, rooms = setup()
    tracks.on_event("token", token(0, "theirs", "lobby"))  # not joined: ignored
    assert len(tracks) == 1
    room = rooms["lobby"] = Room(Host(), "lobby")
    for seq in (0, 1, 1):
        tracks.on_event("token", token(seq, "theirs", "lobby"))
    tracks.on_event("done", done("theirs", "lobby"))
    tracks.on_event("done", done("theirs", "lobby"))
    events = [await room.__anext__() for _ in range(3)]
    assert [type(e) for e in events] == [Token, Token, Done]
    assert room._queue.empty()
    assert len(tracks) == 1  # only ours is still open


def test_fail_ours_ends_our_streams_and_forgets_the_rest() -> None:
    tracks, stream, _, rooms = setup()
    rooms["lobby"] = Room(Host(), "lobby")
    tracks.on_event("token", token(0, "theirs", "lobby"))
    assert len(tracks) == 2
    tracks.fail_ours(ChatError("connection_error", "gone", retryable=True))
    assert len(tracks) == 0
    assert stream.finished


@pytest.mark.parametrize(
    ("code", "exit_status"),
    [
        ("unauthorized", 3),
        ("token_expired", 3),
        ("upstream_unavailable", 4),
        ("moderation", 4),
        ("connection_error", 5),
        ("rate_limited", 6),
        ("model_not_allowed", 6),
        ("internal", 1),
    ],
)
def test_cli_exit_codes(code: str, exit_status: int) -> None:
    assert exit_code(ChatError(code, "m")) == exit_status


def test_chat_error_from_the_wire() -> None:
    error = ChatError.from_wire(
        {"code": "rate_limited", "message": "slow down", "retry_after": 2, "request_id": "r"}
    )
    assert (error.code, error.retryable, error.retry_after, error.request_id) == (
        "rate_limited",
        True,
        2.0,
        "r",
    )
    assert ChatError.from_wire(None).code == "internal"
    assert error.to_dict()["retry_after"] == 2.0
