"""Rooms on one server process (in-memory room state): join, leave, presence, room chat."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.harness import Recorder, RunningServer, assert_clean_stream, make_token, run_server
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import NORMAL_TEXT

Factory = Callable[[], Recorder]


async def member(url: str, recorders: Factory, sub: str, **claims: Any) -> Recorder:
    rec = recorders()
    claims.setdefault("name", sub.title())
    await rec.connect(url, make_token(sub, **claims))
    await rec.wait_event("session")
    return rec


def say(
    text: str, room: str | None, request_id: str, model: str = "double/normal"
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "room": room,
        "model": model,
        "messages": [{"role": "user", "content": text}],
    }


def presences(rec: Recorder, room: str) -> list[list[str]]:
    return [
        [m["id"] for m in d["members"]]
        for e, d in rec.events
        if e == "presence" and d["room"] == room
    ]


async def wait_presence(rec: Recorder, room: str, ids: list[str]) -> None:
    def match(event: str, data: Any) -> bool:
        return event == "presence" and data["room"] == room and member_ids(data) == ids

    await rec.wait_for(match)


def member_ids(presence: dict[str, Any]) -> list[str]:
    return [m["id"] for m in presence["members"]]


def room_events(rec: Recorder, room: str) -> list[tuple[str, Any]]:
    return [(e, d) for e, d in rec.events if isinstance(d, dict) and d.get("room") == room]


async def test_room_chat_reaches_members_only(server: RunningServer, recorders: Factory) -> None:
    alice = await member(server.url, recorders, "alice")
    bob = await member(server.url, recorders, "bob")
    carol = await member(server.url, recorders, "carol")
    assert (await alice.call("join", {"room": "lobby"}))["ok"] is True
    assert (await bob.call("join", {"room": "lobby"}))["ok"] is True
    assert (await carol.call("join", {"room": "elsewhere"}))["ok"] is True

    ack = await alice.call("chat", say("Hello room", "lobby", "r1"))
    assert ack == {"ok": True, "request_id": "r1"}
    for rec in (alice, bob):
        event, done = await rec.terminal("r1")
        assert event == "done", done
        assert done["room"] == "lobby"
        assert_clean_stream(rec, "r1")
        assert rec.text("r1") == NORMAL_TEXT
        assert all(t["room"] == "lobby" for t in rec.tokens("r1"))
        messages = [d for e, d in rec.events if e == "message"]
        assert len(messages) == 1
        message = messages[0]
        assert message["room"] == "lobby"
        assert message["user"] == {"id": "alice", "name": "Alice"}
        assert (message["role"], message["content"]) == ("user", "Hello room")
        assert isinstance(message["ts"], float | int)
        assert message["id"]
        names = [e for e, _ in rec.events]
        assert names.index("message") < names.index("token")
    assert alice.tokens("r1") == bob.tokens("r1")

    await asyncio.sleep(0.3)
    assert room_events(carol, "lobby") == []
    assert carol.of("r1") == []
    assert not [e for e, _ in carol.events if e in ("message", "token", "done")]


async def test_late_joiner_gets_history_with_the_reply(
    server: RunningServer, recorders: Factory
) -> None:
    alice = await member(server.url, recorders, "alice")
    await alice.call("join", {"room": "lobby"})
    await alice.call("chat", say("First question", "lobby", "q1"))
    assert (await alice.terminal("q1"))[0] == "done"

    dave = await member(server.url, recorders, "dave")
    ack = await dave.call("join", {"room": "lobby"})
    assert ack["ok"] is True
    assert ack["room"] == "lobby"
    assert ack["members"] == [{"id": "alice", "name": "Alice"}, {"id": "dave", "name": "Dave"}]
    history = ack["history"]
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "First question"),
        ("assistant", NORMAL_TEXT),
    ]
    assert history[0]["user"] == {"id": "alice", "name": "Alice"}
    assert history[1]["user"]["id"] == "assistant"
    assert history[1]["user"]["name"] == "double/normal"
    assert history[0]["ts"] <= history[1]["ts"]
    assert len({m["id"] for m in history}) == 2
    # the sender's own copy of the message has the id kept in history
    sent = next(d for e, d in alice.events if e == "message")
    assert sent == history[0]


async def test_presence_on_join_leave_and_disconnect(
    server: RunningServer, recorders: Factory
) -> None:
    alice = await member(server.url, recorders, "alice")
    await alice.call("join", {"room": "lobby"})
    await wait_presence(alice, "lobby", ["alice"])

    bob = await member(server.url, recorders, "bob")
    ack = await bob.call("join", {"room": "lobby"})
    assert [m["id"] for m in ack["members"]] == ["alice", "bob"]
    await wait_presence(alice, "lobby", ["alice", "bob"])
    presence = next(d for e, d in alice.events if e == "presence" and len(d["members"]) == 2)
    assert presence["members"][1] == {"id": "bob", "name": "Bob"}
    assert set(presence) == {"room", "members"}  # no connection ids

    assert await bob.call("leave", {"room": "lobby"}) == {"ok": True}
    await wait_presence(alice, "lobby", ["alice"])

    # a user with two connections is listed once, until the last one goes
    bob2 = await member(server.url, recorders, "bob")
    await bob.call("join", {"room": "lobby"})
    await bob2.call("join", {"room": "lobby"})
    await wait_presence(alice, "lobby", ["alice", "bob"])
    await bob2.leave()  # deliberate disconnect
    await asyncio.sleep(0.3)
    assert presences(alice, "lobby")[-1] == ["alice", "bob"]
    await bob.drop()  # lost transport
    await wait_presence(alice, "lobby", ["alice"])


async def test_sid_and_bad_names_are_refused_and_private_streams_stay_private(
    server: RunningServer, recorders: Factory
) -> None:
    victim = await member(server.url, recorders, "victim")
    victim_sid = (await victim.wait_event("session"))["sid"]
    attacker = await member(server.url, recorders, "mallory")

    refused = await attacker.call("join", {"room": victim_sid})
    assert refused["ok"] is False
    assert refused["error"]["code"] == "forbidden"
    own_sid = (await attacker.wait_event("session"))["sid"]
    assert (await attacker.call("join", {"room": own_sid}))["error"]["code"] == "forbidden"

    for bad in (None, "", "a b", "x" * 65, "é", 5, ["lobby"]):
        ack = await attacker.call("join", {"room": bad})
        assert ack["error"]["code"] == "invalid_payload", bad
    assert (await attacker.call("join", {}))["error"]["code"] == "invalid_payload"
    assert (await attacker.call("join", {"room": "x", "extra": 1}))["error"]["code"] == (
        "invalid_payload"
    )
    assert (await attacker.call("join", "lobby"))["error"]["code"] == "invalid_payload"
    for reserved in ("_internal", "_"):
        assert (await attacker.call("join", {"room": reserved}))["error"]["code"] == "forbidden"
    for bad in (None, ""):
        assert (await attacker.call("leave", {"room": bad}))["error"]["code"] == "invalid_payload"
    # a room cannot be chatted into without joining it, the sid "room" included
    refused_chat = await attacker.call("chat", say("hi", victim_sid, "m1"))
    assert refused_chat["error"]["code"] == "forbidden"
    error = await attacker.wait_for(lambda e, d: e == "error" and d.get("request_id") == "m1")
    assert error[1]["code"] == "forbidden"
    # a name of the sid's shape that is no connection's id is an ordinary room
    assert (await attacker.call("join", {"room": "engineering-standups"}))["ok"] is True

    await victim.call("chat", say("secret", None, "v1"))
    assert (await victim.terminal("v1"))[0] == "done"
    assert victim.text("v1") == NORMAL_TEXT
    await asyncio.sleep(0.3)
    assert attacker.of("v1") == []
    assert not [e for e, _ in attacker.events if e in ("token", "done", "message")]


async def test_null_or_empty_room_in_chat_is_never_a_broadcast(
    server: RunningServer, recorders: Factory
) -> None:
    alice = await member(server.url, recorders, "alice")
    bob = await member(server.url, recorders, "bob")
    assert (await alice.call("chat", say("private", None, "p1")))["ok"] is True
    assert (await alice.terminal("p1"))[0] == "done"
    empty = await alice.call("chat", say("oops", "", "p2"))
    assert empty["error"]["code"] == "invalid_payload"
    await asyncio.sleep(0.3)
    assert bob.of("p1") == []
    assert bob.of("p2") == []
    assert not [e for e, _ in bob.events if e in ("token", "done", "message", "error")]


async def test_leave_and_chat_outside_rooms(server: RunningServer, recorders: Factory) -> None:
    alice = await member(server.url, recorders, "alice")
    ack = await alice.call("leave", {"room": "lobby"})
    assert ack["error"]["code"] == "not_found"
    ack = await alice.call("chat", say("hi", "lobby", "c1"))
    assert ack["error"]["code"] == "forbidden"
    await alice.call("join", {"room": "lobby"})
    await alice.call("leave", {"room": "lobby"})
    ack = await alice.call("chat", say("hi", "lobby", "c2"))
    assert ack["error"]["code"] == "forbidden"
    # joining twice is harmless and answers the same picture
    first = await alice.call("join", {"room": "lobby"})
    again = await alice.call("join", {"room": "lobby"})
    assert first["members"] == again["members"] == [{"id": "alice", "name": "Alice"}]


async def test_rooms_per_connection_are_capped(
    upstream: UpstreamDouble, settings_for: Callable[..., Any], recorders: Factory
) -> None:
    async with run_server(settings_for(max_rooms_per_connection=2)) as srv:
        alice = await member(srv.url, recorders, "alice")
        assert (await alice.call("join", {"room": "a"}))["ok"] is True
        assert (await alice.call("join", {"room": "b"}))["ok"] is True
        assert (await alice.call("join", {"room": "a"}))["ok"] is True  # already in it
        third = await alice.call("join", {"room": "c"})
        assert third["error"]["code"] == "forbidden"
        await alice.call("leave", {"room": "a"})
        assert (await alice.call("join", {"room": "c"}))["ok"] is True
        await alice.close()


async def test_rooms_claim_restricts_joins(server: RunningServer, recorders: Factory) -> None:
    team = await member(server.url, recorders, "tess", rooms=["team-*", "support"])
    assert (await team.call("join", {"room": "team-red"}))["ok"] is True
    assert (await team.call("join", {"room": "support"}))["ok"] is True
    assert (await team.call("join", {"room": "lobby"}))["error"]["code"] == "forbidden"
    nobody = await member(server.url, recorders, "nora", rooms=[])
    assert (await nobody.call("join", {"room": "team-red"}))["error"]["code"] == "forbidden"
    anyone = await member(server.url, recorders, "andy")
    assert (await anyone.call("join", {"room": "lobby"}))["ok"] is True


async def test_a_refreshed_token_without_the_room_leaves_it(
    server: RunningServer, recorders: Factory
) -> None:
    tess = await member(server.url, recorders, "tess", rooms=["team-*"])
    bob = await member(server.url, recorders, "bob")
    await tess.call("join", {"room": "team-red"})
    await bob.call("join", {"room": "team-red"})
    await wait_presence(bob, "team-red", ["tess", "bob"])
    narrower = make_token("tess", name="Tess", rooms=["support"])
    assert (await tess.call("refresh", {"token": narrower}))["ok"] is True
    await wait_presence(bob, "team-red", ["bob"])
    refused = await tess.call("chat", say("still here?", "team-red", "t1"))
    assert refused["error"]["code"] == "forbidden"
    await bob.call("chat", say("tess is gone", "team-red", "b1"))
    assert (await bob.terminal("b1"))[0] == "done"
    await asyncio.sleep(0.3)
    assert tess.of("b1") == []
    assert (await tess.call("join", {"room": "team-red"}))["error"]["code"] == "forbidden"


async def test_model_gets_the_room_conversation_in_order(
    server: RunningServer, recorders: Factory, upstream: UpstreamDouble
) -> None:
    alice = await member(server.url, recorders, "alice", name="Alice Smith")
    bob = await member(server.url, recorders, "bob")
    await alice.call("join", {"room": "lobby"})
    await bob.call("join", {"room": "lobby"})
    await alice.call("chat", say("What is 2+2?", "lobby", "a1"))
    await bob.terminal("a1")
    await bob.call("chat", say("And 3+3?", "lobby", "b1"))
    await alice.terminal("b1")
    body = upstream.requests[-1].body
    assert body["messages"] == [
        {"role": "user", "content": "What is 2+2?", "name": "Alice_Smith"},
        {"role": "assistant", "content": NORMAL_TEXT},
        {"role": "user", "content": "And 3+3?", "name": "Bob"},
    ]
    assert "room" not in body
    assert "request_id" not in body


async def test_conversation_drops_the_oldest_beyond_the_budget(
    upstream: UpstreamDouble, settings_for: Callable[..., Any], recorders: Factory
) -> None:
    budget = len(NORMAL_TEXT) + 40
    async with run_server(settings_for(room_context_chars=budget)) as srv:
        alice = await member(srv.url, recorders, "alice")
        await alice.call("join", {"room": "lobby"})
        await alice.call("chat", say("a" * 30, "lobby", "x1"))
        await alice.terminal("x1")
        await alice.call("chat", say("b" * 30, "lobby", "x2"))
        await alice.terminal("x2")
        assert [m["content"] for m in upstream.requests[-1].body["messages"]] == [
            NORMAL_TEXT,
            "b" * 30,
        ]
        # a new message larger than the whole budget is still sent, alone
        await alice.call("chat", say("c" * (budget + 1), "lobby", "x3"))
        await alice.terminal("x3")
        assert [m["content"] for m in upstream.requests[-1].body["messages"]] == [
            "c" * (budget + 1)
        ]
        await alice.close()


async def test_history_keeps_the_last_room_history_limit_messages(
    upstream: UpstreamDouble, settings_for: Callable[..., Any], recorders: Factory
) -> None:
    async with run_server(settings_for(room_history_limit=3)) as srv:
        alice = await member(srv.url, recorders, "alice")
        await alice.call("join", {"room": "lobby"})
        for i in range(3):
            await alice.call("chat", say(f"question {i}", "lobby", f"h{i}"))
            await alice.terminal(f"h{i}")
        bob = await member(srv.url, recorders, "bob")
        history = (await bob.call("join", {"room": "lobby"}))["history"]
        assert [m["content"] for m in history] == [NORMAL_TEXT, "question 2", NORMAL_TEXT]
        assert len(upstream.requests[-1].body["messages"]) == 3
        await alice.close()
        await bob.close()


async def test_members_chat_at_once(server: RunningServer, recorders: Factory) -> None:
    alice = await member(server.url, recorders, "alice")
    bob = await member(server.url, recorders, "bob")
    await alice.call("join", {"room": "lobby"})
    await bob.call("join", {"room": "lobby"})
    acks = await asyncio.gather(
        alice.call("chat", say("from alice", "lobby", "same-id")),
        bob.call("chat", say("from bob", "lobby", "bob-1")),
    )
    assert [a["ok"] for a in acks] == [True, True]
    for rec in (alice, bob):
        for rid in ("same-id", "bob-1"):
            assert (await rec.terminal(rid))[0] == "done"
            assert_clean_stream(rec, rid)
            assert rec.text(rid) == NORMAL_TEXT
        contents = sorted(d["content"] for e, d in rec.events if e == "message")
        assert contents == ["from alice", "from bob"]
    history = (await alice.call("join", {"room": "lobby"}))["history"]
    assert sorted(m["role"] for m in history) == ["assistant", "assistant", "user", "user"]


async def test_a_request_id_names_one_stream_per_room(
    server: RunningServer, recorders: Factory
) -> None:
    alice = await member(server.url, recorders, "alice")
    bob = await member(server.url, recorders, "bob")
    await alice.call("join", {"room": "lobby"})
    await bob.call("join", {"room": "lobby"})
    await alice.call("chat", say("mine", "lobby", "dup"))
    assert (await bob.terminal("dup"))[0] == "done"
    refused = await bob.call("chat", say("mine too", "lobby", "dup"))
    assert refused["error"]["code"] == "invalid_payload"
    assert refused["error"]["details"][0]["field"] == "request_id"
    assert (await bob.call("chat", say("private", None, "dup")))["ok"] is True  # not a room
    assert (await alice.call("chat", say("again", "lobby", "dup")))["ok"] is True  # her own
    await asyncio.sleep(0.3)
    assert sum(1 for e, _ in bob.events if e == "message") == 2  # bob's refused one: not posted


async def test_a_failed_answer_keeps_the_question_only(
    server: RunningServer, recorders: Factory
) -> None:
    alice = await member(server.url, recorders, "alice")
    await alice.call("join", {"room": "lobby"})
    await alice.call("chat", say("hi", "lobby", "e1", model="double/http_400"))
    event, error = await alice.terminal("e1")
    assert (event, error["code"], error["room"]) == ("error", "upstream_bad_request", "lobby")
    history = (await alice.call("join", {"room": "lobby"}))["history"]
    assert [m["content"] for m in history] == ["hi"]
