"""Room streams between nodes through coalesced publishes (``PUBSUB_FLUSH_MS``): each
event once, in order, one terminal; a stream's first and last event never wait for the
window; nodes that publish single messages (python-socketio's own format, a node before
batching) are still understood."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
import redis.asyncio as aioredis
import socketio

from tests.harness import Recorder, SpawnedServer, assert_clean_stream, spawn_server
from tests.integration import test_rooms_redis
from tests.integration.resume_helpers import wait_seq
from tests.integration.test_rooms import member, say
from tests.integration.test_rooms_redis import node_env
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import Scenario

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

Factory = Callable[[], Recorder]
prefix = test_rooms_redis.prefix  # the fixture: a key prefix (and channel), cleaned after
MINUTE_MS = "60000"  # the longest window allowed; no test here waits it out


@asynccontextmanager
async def started(*envs: dict[str, str]) -> AsyncIterator[list[SpawnedServer]]:
    """A node per ``env``, started side by side."""
    spawned = await asyncio.gather(*(spawn_server(env) for env in envs), return_exceptions=True)
    try:
        for node in spawned:
            if isinstance(node, BaseException):
                raise node
        yield [node for node in spawned if isinstance(node, SpawnedServer)]
    finally:
        for node in spawned:
            if isinstance(node, SpawnedServer):
                with suppress(Exception):
                    await node.stop()


@asynccontextmanager
async def sniffing(redis_url: str, channel: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Every PUBLISH on ``channel`` while inside, decoded (a batch as itself)."""
    client = aioredis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    published: list[dict[str, Any]] = []

    async def read() -> None:
        async for message in pubsub.listen():
            published.append(json.loads(message["data"]))

    reader = asyncio.ensure_future(read())
    try:
        yield published
    finally:
        await asyncio.sleep(0.3)  # what was published last reaches us too
        reader.cancel()
        await asyncio.wait([reader])
        await pubsub.aclose()
        await client.aclose()


async def in_room(url: str, recorders: Factory, sub: str, *rooms: str) -> Recorder:
    rec = await member(url, recorders, sub)
    for room in rooms:
        assert (await rec.call("join", {"room": room}))["ok"] is True
    return rec


def assert_same_stream(members: list[Recorder], request_id: str) -> None:
    """Every member got the request's events once each, in order, one terminal (``done``)
    last, and the same events."""
    for rec in members:
        event, end = assert_clean_stream(rec, request_id)
        assert event == "done", end
    first = members[0].of(request_id)
    for rec in members[1:]:
        assert rec.of(request_id) == first


async def test_concurrent_room_streams_reach_other_nodes_once_each_in_order(
    upstream: UpstreamDouble, redis_url: str, prefix: str, recorders: Factory
) -> None:
    burst, paced = [f"b{i} " for i in range(60)], [f"p{i} " for i in range(30)]
    upstream.scenarios["burst"] = Scenario(name="burst", tokens=burst)
    upstream.scenarios["paced"] = Scenario(name="paced", tokens=paced, delay_s=0.01)
    env = {**node_env(upstream, redis_url, prefix), "TOKEN_COALESCE_MS": "0"}
    async with started(env, env) as (one, two):
        alice = await in_room(one.url, recorders, "alice", "north", "south")
        bob = await in_room(two.url, recorders, "bob", "north", "south")
        carol = await in_room(two.url, recorders, "carol", "north")
        starts = [
            (alice, say("a", "north", "n1", "double/burst")),
            (alice, say("b", "south", "s1", "double/paced")),
            (bob, say("c", "north", "n2", "double/paced")),
            (bob, say("d", "south", "s2", "double/burst")),
        ]
        acks = await asyncio.gather(*(rec.call("chat", body) for rec, body in starts))
        assert all(ack["ok"] for ack in acks), acks
        for request_id in ("n1", "s1", "n2", "s2"):
            for rec in (alice, bob):
                await rec.terminal(request_id, timeout=30)
        await carol.terminal("n2", timeout=30)
        await carol.terminal("n1", timeout=30)
        await asyncio.sleep(0.3)  # nothing may follow a terminal event
        for request_id in ("n1", "n2"):
            assert_same_stream([alice, bob, carol], request_id)
        for request_id in ("s1", "s2"):
            assert_same_stream([alice, bob], request_id)
            assert not carol.of(request_id)
        assert (bob.text("n1"), alice.text("n2")) == ("".join(burst), "".join(paced))


async def test_a_streams_first_and_last_event_never_wait_for_the_window(
    upstream: UpstreamDouble, redis_url: str, prefix: str, recorders: Factory
) -> None:
    upstream.scenarios["one"] = Scenario(name="one", tokens=["only"])
    upstream.scenarios["slow"] = Scenario(name="slow", tokens=["w ", "x ", "y ", "z"], delay_s=0.3)
    env = {
        **node_env(upstream, redis_url, prefix),
        "TOKEN_COALESCE_MS": "0",
        "PUBSUB_FLUSH_MS": MINUTE_MS,
    }
    async with (
        started(env, env) as (one, two),
        sniffing(redis_url, prefix + "socketio") as published,
    ):
        alice = await in_room(one.url, recorders, "alice", "lobby")
        bob = await in_room(two.url, recorders, "bob", "lobby")
        # a one-token stream: its only token and its done go at once, not in a minute
        assert (await alice.call("chat", say("hi", "lobby", "q1", "double/one")))["ok"]
        await bob.terminal("q1", timeout=20)
        assert_same_stream([alice, bob], "q1")
        assert bob.text("q1") == "only"

        assert (await alice.call("chat", say("hi", "lobby", "q2", "double/slow")))["ok"]
        await wait_seq(bob, "q2", 0)  # the first token: at once
        await wait_seq(alice, "q2", 3)  # the middle ones wait for the window here ...
        assert [t["seq"] for t in bob.tokens("q2")] == [0]
        await bob.terminal("q2", timeout=20)  # ... and go with the terminal event
        assert_same_stream([alice, bob], "q2")

    batches = [m for m in published if m["method"] == "batch"]
    held = [
        (m["event"], m["data"][0].get("seq"))
        for batch in batches
        for m in batch["messages"]
        if m["data"][0].get("request_id") == "q2"
    ]
    assert held == [("token", 1), ("token", 2), ("token", 3), ("done", None)], published


async def test_nodes_that_publish_single_messages_are_understood(
    upstream: UpstreamDouble, redis_url: str, prefix: str, recorders: Factory
) -> None:
    """A rolling upgrade: a node with ``PUBSUB_FLUSH_MS=0`` (python-socketio's single
    messages, as nodes before batching send) and a batching node share a room; so does
    python-socketio's own manager emitting from outside."""
    base = {**node_env(upstream, redis_url, prefix), "TOKEN_COALESCE_MS": "0"}
    async with started({**base, "PUBSUB_FLUSH_MS": "0"}, base) as (single, batching):
        alice = await in_room(single.url, recorders, "alice", "lobby")
        bob = await in_room(batching.url, recorders, "bob", "lobby")
        async with sniffing(redis_url, prefix + "socketio") as published:
            assert (await alice.call("chat", say("hi", "lobby", "u1")))["ok"]
            await bob.terminal("u1", timeout=20)
        assert published, "nothing crossed Redis"
        assert all(m["method"] != "batch" for m in published), published
        assert (await bob.call("chat", say("hi", "lobby", "u2")))["ok"]
        await alice.terminal("u2", timeout=20)
        for request_id in ("u1", "u2"):
            assert_same_stream([alice, bob], request_id)

        outside = socketio.AsyncRedisManager(
            redis_url, channel=prefix + "socketio", write_only=True
        )
        note = {"room": "lobby", "members": [{"id": "zed", "name": "Zed"}]}
        await outside.emit("presence", note, namespace="/", room="room:lobby")
        await outside.redis.aclose()
        for rec in (alice, bob):
            await rec.wait_for(lambda e, d: e == "presence" and d == note, timeout=10)


async def test_a_stopping_node_sends_what_waits_then_the_terminal_event(
    upstream: UpstreamDouble, redis_url: str, prefix: str, recorders: Factory
) -> None:
    """SIGTERM mid-stream (``SHUTDOWN_GRACE_S=1``): the member on the other node gets
    every token the stream sent, then ``server_shutdown`` once — with a window of a minute,
    the tokens held in it go out with that terminal event."""
    upstream.scenarios["long"] = Scenario(
        name="long", tokens=[f"l{i} " for i in range(200)], delay_s=0.05
    )
    env = {
        **node_env(upstream, redis_url, prefix),
        "TOKEN_COALESCE_MS": "0",
        "PUBSUB_FLUSH_MS": MINUTE_MS,
    }
    async with started(env, env) as (one, two):
        alice = await in_room(one.url, recorders, "alice", "lobby")
        bob = await in_room(two.url, recorders, "bob", "lobby")
        assert (await alice.call("chat", say("hi", "lobby", "k1", "double/long")))["ok"]
        await wait_seq(alice, "k1", 5)
        assert await one.stop() == 0
        event, end = await bob.terminal("k1", timeout=20)
        assert (event, end["code"]) == ("error", "server_shutdown"), end
        await asyncio.sleep(0.5)
        assert_clean_stream(bob, "k1")
        assert bob.tokens("k1") == alice.tokens("k1")
