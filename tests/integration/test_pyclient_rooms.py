"""Rooms through the Python client: join, leave, events, chat, and surviving a reconnect."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from llm_relay_client import (
    ChatClient,
    ChatError,
    Done,
    Message,
    Presence,
    Room,
    RoomEvent,
    Token,
)
from tests.harness import RunningServer, make_token, run_server
from tests.integration.test_pyclient import kill_transport
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import SLOW_TEXT

E = TypeVar("E")


def client_for(server: RunningServer, sub: str, **options: Any) -> ChatClient:
    return ChatClient(server.url, token=make_token(sub, name=sub.title()), **options)


async def next_of(room: Room, kind: type[E], timeout: float = 10) -> E:
    """The next event of one kind (others are skipped)."""

    async def find() -> E:
        async for event in room:
            if isinstance(event, kind):
                return event
        raise AssertionError(f"room {room.name} ended before a {kind.__name__}")

    return await asyncio.wait_for(find(), timeout)


async def drain(room: Room) -> list[RoomEvent]:
    return [event async for event in room]


async def until_done(room: Room, request_id: str, timeout: float = 30) -> list[RoomEvent]:
    """Events up to and including the terminal one of ``request_id``."""
    seen: list[RoomEvent] = []

    async def collect() -> list[RoomEvent]:
        async for event in room:
            seen.append(event)
            if isinstance(event, Done) and event.request_id == request_id:
                return seen
        raise AssertionError(f"room ended early: {seen!r}")

    return await asyncio.wait_for(collect(), timeout)


async def test_room_members_messages_and_the_streamed_reply(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    async with client_for(server, "alice") as alice, client_for(server, "bob") as bob:
        bob_room = await bob.join("lobby")
        assert [m.id for m in bob_room.members] == ["bob"]
        assert bob_room.history == ()
        alice_room = await alice.join("lobby")
        assert {m.id for m in alice_room.members} == {"alice", "bob"}
        presence = await next_of(bob_room, Presence)  # his own arrival
        while {m.id for m in presence.members} != {"alice", "bob"}:
            presence = await next_of(bob_room, Presence)  # then alice's
        assert {m.id for m in bob_room.members} == {"alice", "bob"}

        stream = alice_room.stream("hello room", model="double/echo")
        answer = "".join([text async for text in stream])
        assert answer == "echo: hello room"
        assert stream.done is not None
        assert stream.done.room == "lobby"

        events = await until_done(bob_room, stream.request_id)
        messages = [e for e in events if isinstance(e, Message)]
        assert [(m.user.id, m.role, m.text) for m in messages] == [("alice", "user", "hello room")]
        tokens = [e for e in events if isinstance(e, Token)]
        assert [t.seq for t in tokens] == list(range(len(tokens)))
        assert "".join(t.content for t in tokens) == answer
        assert all(t.room == "lobby" and t.request_id == stream.request_id for t in tokens)
        # the model saw the room's conversation, the new message last
        last = upstream.requests[-1].body["messages"][-1]
        assert (last["role"], last["content"]) == ("user", "hello room")

        async with client_for(server, "carol") as carol:
            late = await carol.join("lobby")
            assert [(m.role, m.text) for m in late.history] == [
                ("user", "hello room"),
                ("assistant", answer),
            ]


async def test_leave_ends_the_iterator_and_refusals_raise(server: RunningServer) -> None:
    async with client_for(server, "alice") as alice:
        room = await alice.join("side")
        assert await alice.join("side") is room  # joining twice is the same room
        await room.leave()
        # the feed ends (after the events that came before leaving)
        await asyncio.wait_for(drain(room), 5)
        assert not room.joined
        with pytest.raises(ChatError) as not_joined:
            await alice.leave("side")
        assert not_joined.value.code == "not_found"
        with pytest.raises(ChatError) as bad_name:
            await alice.join("no spaces allowed")
        assert bad_name.value.code == "invalid_payload"
        with pytest.raises(ChatError) as reserved:
            await alice.join("_internal")
        assert reserved.value.code == "forbidden"
        with pytest.raises(ChatError) as outsider:
            await alice.complete("hi", room="elsewhere", model="double/normal")
        assert outsider.value.code == "forbidden"


async def test_room_feed_survives_a_killed_transport(
    upstream: UpstreamDouble, settings_for: Callable[..., Any]
) -> None:
    """Bob loses his transport while Alice's answer streams to the room: after the
    reconnect his room feed still carries every token exactly once, then ``done``."""
    async with (
        run_server(settings_for(resume_grace_s=20)) as srv,
        client_for(srv, "alice") as alice,
        client_for(srv, "bob") as bob,
    ):
        bob_room = await bob.join("lobby")
        alice_room = await alice.join("lobby")
        await next_of(bob_room, Presence)
        async with alice_room.stream("count", model="double/slow") as stream:
            tokens: list[Token] = []

            async def read_bob() -> None:
                async for event in bob_room:
                    if isinstance(event, Token):
                        tokens.append(event)
                        if len(tokens) == 3:
                            await kill_transport(bob)
                    if isinstance(event, Done) and event.request_id == stream.request_id:
                        return

            await asyncio.wait_for(read_bob(), 40)
            assert "".join([text async for text in stream]) == SLOW_TEXT
        assert [t.seq for t in tokens] == list(range(len(tokens)))
        assert "".join(t.content for t in tokens) == SLOW_TEXT
        assert bob.session is not None
        assert {m.id for m in bob_room.members} >= {"bob"}


async def test_cli_chats_in_a_room(server: RunningServer, upstream: UpstreamDouble) -> None:
    from tests.integration.test_pyclient_cli import run_cli, token_args

    async with client_for(server, "bob") as bob:
        room = await bob.join("cli-room")
        code, out, err = await run_cli(
            *token_args(server, "dana"), "--room", "cli-room", "-m", "double/echo", "hi all"
        )
        assert (code, err) == (0, "")
        assert out == "echo: hi all\n"
        message = await next_of(room, Message)
        assert (message.user.id, message.text) == ("dana", "hi all")
        done = await next_of(room, Done)
        assert done.finish_reason == "stop"
