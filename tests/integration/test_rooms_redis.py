"""Rooms across server processes sharing Redis (``python -m server`` subprocesses)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bench.procs import free_port
from tests.harness import (
    API_KEY,
    JWT_SECRET,
    Recorder,
    SpawnedServer,
    assert_clean_stream,
    run_server,
    scratch_database_url,
    spawn_server,
)
from tests.integration.test_rooms import member, member_ids, say, wait_presence
from tests.redis_server import redis_server_process
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import NORMAL_TEXT

pytestmark = pytest.mark.redis

Factory = Callable[[], Recorder]


@pytest.fixture
def prefix(redis_client: aioredis.Redis, key_prefix: str) -> str:
    """This test's key prefix on the shared Redis; its keys are deleted afterwards
    (by ``redis_client``)."""
    return key_prefix


def node_env(upstream: UpstreamDouble, redis_url: str, prefix: str) -> dict[str, str]:
    return {
        "JWT_SECRET": JWT_SECRET,
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": upstream.base_url,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "UPSTREAM_MAX_RETRIES": "0",
        "SHUTDOWN_GRACE_S": "1",
        "LOG_LEVEL": os.environ.get("TEST_NODE_LOG_LEVEL", "warning"),
        "DATABASE_URL": scratch_database_url(),  # the nodes' one store, never ./relay.db
    }


@asynccontextmanager
async def nodes(env: dict[str, str], count: int) -> AsyncIterator[list[SpawnedServer]]:
    spawned: list[SpawnedServer] = []
    try:
        for _ in range(count):
            spawned.append(await spawn_server(env))
        yield spawned
    finally:
        for node in spawned:
            with suppress(Exception):
                await node.stop()
            if os.environ.get("TEST_NODE_LOG_LEVEL"):
                print(f"--- node on port {node.port}:\n" + "".join(node.output))


async def readiness(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/health/ready") as resp:
        return resp.status, await resp.json()


async def wait_ready(url: str, redis_status: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await readiness(url)
        if body["checks"]["redis"] == redis_status:
            assert status == 200, body
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"readiness never reported redis {redis_status}: {body}")
        await asyncio.sleep(0.2)


async def wait_after(
    rec: Recorder, start: int, predicate: Callable[[str, Any], bool], timeout: float = 20
) -> None:
    """Wait for a matching event among those received after ``rec.events[start]``."""
    deadline = time.monotonic() + timeout
    while not any(predicate(e, d) for e, d in rec.events[start:]):
        assert time.monotonic() < deadline, f"nothing matched; got {rec.events[start:]!r}"
        await asyncio.sleep(0.05)


async def test_two_processes_share_a_room_and_history_survives_a_restart(
    upstream: UpstreamDouble, redis_url: str, prefix: str, recorders: Factory
) -> None:
    env = node_env(upstream, redis_url, prefix)
    async with nodes(env, 2) as (one, two):
        alice = await member(one.url, recorders, "alice")
        bob = await member(two.url, recorders, "bob")
        carol = await member(two.url, recorders, "carol")  # connected, not in the room
        assert (await alice.call("join", {"room": "lobby"}))["members"] == [
            {"id": "alice", "name": "Alice"}
        ]
        ack = await bob.call("join", {"room": "lobby"})
        assert ack["members"] == [{"id": "alice", "name": "Alice"}, {"id": "bob", "name": "Bob"}]
        await wait_presence(alice, "lobby", ["alice", "bob"])  # bob's join, from node two

        assert (await alice.call("chat", say("Hello across nodes", "lobby", "x1")))["ok"]
        for rec in (alice, bob):
            assert (await rec.terminal("x1", timeout=15))[0] == "done"
            assert_clean_stream(rec, "x1")
            assert rec.text("x1") == NORMAL_TEXT
            message = next(d for e, d in rec.events if e == "message")
            assert (message["user"]["id"], message["content"]) == ("alice", "Hello across nodes")
        assert bob.tokens("x1") == alice.tokens("x1")
        # bob answers from node two; alice on node one sees it all
        assert (await bob.call("chat", say("Reply from two", "lobby", "y1")))["ok"]
        assert (await alice.terminal("y1", timeout=15))[0] == "done"
        assert_clean_stream(alice, "y1")
        await asyncio.sleep(0.3)
        assert not [e for e, _ in carol.events if e in ("message", "token", "done", "presence")]

        await bob.call("leave", {"room": "lobby"})
        await wait_presence(alice, "lobby", ["alice"])
        await bob.call("join", {"room": "lobby"})
        await wait_presence(alice, "lobby", ["alice", "bob"])

        # node one stops: alice is gone for bob; history stays in Redis
        await one.stop()
        await wait_presence(bob, "lobby", ["bob"])
        one_again = await spawn_server(env)
        try:
            dave = await member(one_again.url, recorders, "dave")
            ack = await dave.call("join", {"room": "lobby"})
            assert [m["id"] for m in ack["members"]] == ["bob", "dave"]
            assert [(m["role"], m["content"]) for m in ack["history"]] == [
                ("user", "Hello across nodes"),
                ("assistant", NORMAL_TEXT),
                ("user", "Reply from two"),
                ("assistant", NORMAL_TEXT),
            ]
            await wait_presence(bob, "lobby", ["bob", "dave"])
            await dave.close()
        finally:
            await one_again.stop()


async def test_events_cross_redis_as_json_and_private_ones_stay_local(
    settings_for: Callable[..., Any], redis_url: str, prefix: str, recorders: Factory
) -> None:
    listener = aioredis.from_url(redis_url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(prefix + "socketio")
    try:
        settings = settings_for(redis_url=redis_url, redis_key_prefix=prefix)
        async with run_server(settings) as srv:
            alice = await member(srv.url, recorders, "alice")
            await alice.call("join", {"room": "lobby"})
            await alice.call("chat", say("private", None, "p1"))
            assert (await alice.terminal("p1"))[0] == "done"
            await alice.call("chat", say("public", "lobby", "r1"))
            assert (await alice.terminal("r1"))[0] == "done"
            await alice.close()
        published = []
        while (message := await pubsub.get_message(timeout=0.5)) is not None:
            if message["type"] == "message":
                one = json.loads(message["data"])  # JSON: nothing to unpickle
                published.extend(one["messages"] if one["method"] == "batch" else [one])
    finally:
        await pubsub.aclose()
        await listener.aclose()
    emits = [m for m in published if m["method"] == "emit"]
    assert {m["room"] for m in emits} == {"room:lobby"}
    seen = [(m["event"], m["data"][0].get("request_id")) for m in emits]
    assert ("token", "r1") in seen
    assert ("done", "r1") in seen
    assert "message" in [event for event, _ in seen]
    assert "presence" in [event for event, _ in seen]
    assert not [rid for _, rid in seen if rid == "p1"]


async def test_a_sid_on_another_node_cannot_be_joined(
    upstream: UpstreamDouble, redis_url: str, prefix: str, recorders: Factory
) -> None:
    async with nodes(node_env(upstream, redis_url, prefix), 2) as (one, two):
        victim = await member(one.url, recorders, "victim")
        victim_sid = (await victim.wait_event("session"))["sid"]
        attacker = await member(two.url, recorders, "mallory")
        refused = await attacker.call("join", {"room": victim_sid})
        assert refused["error"]["code"] == "forbidden"
        await victim.call("chat", say("secret", None, "v1"))
        assert (await victim.terminal("v1", timeout=15))[0] == "done"
        await asyncio.sleep(0.3)
        assert attacker.of("v1") == []


async def test_killing_redis_degrades_and_recovers(
    upstream: UpstreamDouble, key_prefix: str, recorders: Factory
) -> None:
    port = free_port()
    async with AsyncExitStack() as stack:
        url, proc = stack.enter_context(redis_server_process(port))
        env = node_env(upstream, url + "/0", key_prefix)
        one, two = await stack.enter_async_context(nodes(env, 2))
        await wait_ready(one.url, "ok")
        alice = await member(one.url, recorders, "alice")
        bob = await member(two.url, recorders, "bob")
        await alice.call("join", {"room": "lobby"})
        await bob.call("join", {"room": "lobby"})
        await alice.call("chat", say("before", "lobby", "k0"))
        assert (await bob.terminal("k0", timeout=15))[0] == "done"

        proc.kill()
        proc.wait(10)
        body = await wait_ready(one.url, "degraded")
        assert body["status"] == "degraded"
        assert body["checks"]["upstream"] == "ok"
        # local work goes on: a private chat streams completely
        assert (await alice.call("chat", say("still there?", None, "k1")))["ok"]
        assert (await alice.terminal("k1", timeout=15))[0] == "done"
        assert_clean_stream(alice, "k1")
        assert alice.text("k1") == NORMAL_TEXT
        # shared room state is out of reach: refused, retryable, the connection stays usable
        refused = await alice.call("chat", say("room?", "lobby", "k2"))
        assert refused["ok"] is False
        assert refused["error"]["retryable"] is True
        assert (await alice.call("join", {"room": "other"}))["ok"] is False
        assert await alice.call("leave", {"room": "lobby"}) == {"ok": True}

        # Redis returns (empty): every node recovers by itself, no restart
        mark = len(bob.events)
        with redis_server_process(port) as (_url, _proc2):
            await wait_ready(one.url, "ok")
            await wait_ready(two.url, "ok")
            await alice.call("join", {"room": "lobby"})
            ack = await alice.call("chat", say("after", "lobby", "k3"))
            assert ack["ok"] is True, ack
            assert (await bob.terminal("k3", timeout=15))[0] == "done"
            assert_clean_stream(bob, "k3")
            assert bob.text("k3") == NORMAL_TEXT
            # bob's membership was lost with Redis' data: his node re-asserts it by itself
            await wait_after(
                bob,
                mark,
                lambda e, d: e == "presence" and sorted(member_ids(d)) == ["alice", "bob"],
            )
            erin = await member(one.url, recorders, "erin")
            ack = await erin.call("join", {"room": "lobby"})
            assert sorted(member_ids(ack)) == ["alice", "bob", "erin"]
            await alice.close()
            await bob.close()
            await one.stop()
            await two.stop()


async def test_uvicorn_workers_share_rooms_over_websocket(
    upstream: UpstreamDouble, redis_url: str, prefix: str, recorders: Factory
) -> None:
    """``uvicorn server.main:app --workers 2``: websocket-only clients need no stickiness."""
    port = free_port()
    env = {**os.environ, **node_env(upstream, redis_url, prefix)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "server.main:app",
        "--workers",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ws",
        "websockets-sansio",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    client = aioredis.from_url(redis_url)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with suppress(aiohttp.ClientError):
                if (await readiness(url))[1]["checks"]["redis"] == "ok":
                    workers = await client.smembers(prefix + "rooms:nodes")
                    if len(workers) == 2:
                        break
            assert time.monotonic() < deadline, "workers did not start"
            await asyncio.sleep(0.2)
        # connect until both workers hold members of the room
        clients: list[Recorder] = []
        for i in range(40):
            rec = await member(url, recorders, f"user{i}")
            await rec.call("join", {"room": "lobby"})
            clients.append(rec)
            per_node = [
                await client.scard(f"{prefix}rooms:node:{node.decode()}:sids") for node in workers
            ]
            if len(clients) >= 2 and all(per_node):
                break
        assert all(per_node), "every connection landed on one worker"
        await clients[0].call("chat", say("hello workers", "lobby", "w1"))
        for rec in clients:
            assert (await rec.terminal("w1", timeout=15))[0] == "done"
            assert rec.text("w1") == NORMAL_TEXT
    finally:
        await client.aclose()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
