"""Room history survives restarting every node: the store answers when memory and Redis forget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.harness import Recorder, make_token, run_server
from tests.integration.test_rooms import say
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import NORMAL_TEXT

Factory = Callable[[], Recorder]


async def joined(url: str, recorders: Factory, user: str, room: str) -> tuple[Recorder, Any]:
    rec = recorders()
    await rec.connect(url, make_token(user, name=user.title()))
    await rec.wait_event("session")
    ack = await rec.call("join", {"room": room})
    assert ack["ok"] is True, ack
    return rec, ack


async def converse(rec: Recorder, room: str, text: str, request_id: str) -> None:
    ack = await rec.call("chat", say(text, room, request_id))
    assert ack["ok"] is True, ack
    event, _ = await rec.terminal(request_id)
    assert event == "done"


async def wait_archived(server_url: str, user: str, requests: int) -> None:
    """The ledger row of the last answer is written after its room message: wait for it."""
    deadline = time.monotonic() + 10
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            headers = {"Authorization": f"Bearer {make_token(user)}"}
            async with http.get(server_url + "/usage/me", headers=headers) as resp:
                if (await resp.json())["today"]["requests"] >= requests:
                    return
            await asyncio.sleep(0.05)
    raise TimeoutError("the ledger did not catch up")


def contents(history: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in history]


async def test_room_history_survives_a_restart_of_the_only_node(
    upstream: UpstreamDouble,
    settings_for: Callable[..., Any],
    recorders: Factory,
    database_url: str,
) -> None:
    settings = settings_for(database_url=database_url)
    async with run_server(settings) as server:
        alice, _ = await joined(server.url, recorders, "alice", "lobby")
        await converse(alice, "lobby", "first question", "r1")
        await converse(alice, "lobby", "second question", "r2")
        await wait_archived(server.url, "alice", 2)
        await alice.close()
    expected = [
        ("user", "first question"),
        ("assistant", NORMAL_TEXT),
        ("user", "second question"),
        ("assistant", NORMAL_TEXT),
    ]
    async with run_server(settings) as server:  # memory forgot everything; the store did not
        bob, ack = await joined(server.url, recorders, "bob", "lobby")
        assert contents(ack["history"]) == expected
        assert ack["history"][0]["user"]["id"] == "alice"
        _, other = await joined(server.url, recorders, "carol", "elsewhere")
        assert other["history"] == []
        # The conversation goes on with its restored context.
        await converse(bob, "lobby", "third question", "r3")
        sent = upstream.requests[-1].body["messages"]
        assert [m["content"] for m in sent[:3]] == [
            "first question",
            NORMAL_TEXT,
            "second question",
        ]
        assert sent[-1]["content"] == "third question"


@pytest.mark.redis
async def test_room_history_survives_restarting_every_node_and_losing_redis(
    upstream: UpstreamDouble,
    settings_for: Callable[..., Any],
    recorders: Factory,
    database_url: str,
    redis_url: str,
    key_prefix: str,
) -> None:
    settings = settings_for(
        database_url=database_url, redis_url=redis_url, redis_key_prefix=key_prefix
    )
    client = aioredis.from_url(redis_url)

    async def forget_redis() -> None:  # a Redis without persistence that restarted
        keys = [key async for key in client.scan_iter(match=key_prefix + "*")]
        if keys:
            await client.delete(*keys)

    try:
        async with AsyncExitStack() as stack:
            nodes = [await stack.enter_async_context(run_server(settings)) for _ in range(2)]
            alice, _ = await joined(nodes[0].url, recorders, "alice", "team")
            bob, _ = await joined(nodes[1].url, recorders, "bob", "team")
            await converse(alice, "team", "hello from node one", "a1")
            await converse(bob, "team", "hello from node two", "b1")
            await wait_archived(nodes[0].url, "alice", 1)
            await wait_archived(nodes[1].url, "bob", 1)
            await alice.close()
            await bob.close()
        await forget_redis()
        async with AsyncExitStack() as stack:
            nodes = [await stack.enter_async_context(run_server(settings)) for _ in range(2)]
            # Everyone comes back to every node at once: the room is restored once.
            (_, first), (_, second) = await asyncio.gather(
                joined(nodes[1].url, recorders, "carol", "team"),
                joined(nodes[0].url, recorders, "dave", "team"),
            )
            _, later = await joined(nodes[0].url, recorders, "erin", "team")
        expected = [
            ("user", "hello from node one"),
            ("assistant", NORMAL_TEXT),
            ("user", "hello from node two"),
            ("assistant", NORMAL_TEXT),
        ]
        assert contents(first["history"]) == expected
        assert contents(second["history"]) == expected
        assert contents(later["history"]) == expected  # restored once, not twice
    finally:
        await forget_redis()
        await client.aclose()
