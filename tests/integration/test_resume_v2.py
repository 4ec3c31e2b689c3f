"""Resume of a reasoning model's stream: reasoning and answer after ``last_seq``, one seq,
on the same node (memory log) and on another node (Redis log)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.harness import STREAM_EVENTS, Recorder, run_server
from tests.integration.resume_helpers import connect
from tests.integration.test_resume_redis import two_nodes
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import SLOW_TEXT, Scenario

__all__ = ["two_nodes"]  # a fixture used below

THOUGHTS = [f"thought{i} " for i in range(20)]
THINKER = Scenario(
    name="thinker", reasoning=THOUGHTS, reasoning_delay_s=0.05, text=SLOW_TEXT, delay_s=0.02
)


async def wait_stream_seq(rec: Recorder, request_id: str, seq: int) -> None:
    await rec.wait_for(
        lambda e, d: e in STREAM_EVENTS and d.get("request_id") == request_id and d["seq"] >= seq,
        15,
    )


def assert_joined(first: Recorder, second: Recorder, request_id: str, cut: int) -> None:
    """What ``first`` had up to ``seq == cut`` and what ``second``'s resume gave after it:
    one gapless seq, the whole reasoning, the whole answer, reasoning first."""
    kept = [(e, d) for e, d in first.of(request_id) if e in STREAM_EVENTS and d["seq"] <= cut]
    resumed = [(e, d) for e, d in second.of(request_id) if e in STREAM_EVENTS]
    events = kept + resumed
    assert [d["seq"] for _, d in events] == list(range(len(events)))
    assert "".join(d["content"] for e, d in events if e == "reasoning") == "".join(THOUGHTS)
    assert "".join(d["content"] for e, d in events if e == "token") == SLOW_TEXT
    kinds = [e for e, _ in events]
    assert kinds == sorted(kinds)
    terminal = second.of(request_id)[-1]
    assert terminal[0] == "done"
    assert terminal[1]["last_seq"] == len(events) - 1


async def test_resume_mid_reasoning_on_the_same_node(
    upstream: UpstreamDouble, settings_for: Callable[..., Any], recorders: Callable[[], Recorder]
) -> None:
    upstream.scenarios["thinker"] = THINKER
    async with run_server(settings_for(token_coalesce_ms=0)) as srv:
        first = await connect(srv.url, recorders())
        await first.call("chat", {"request_id": "v1", "messages": [{"role": "user",
                          "content": "hi"}], "model": "double/thinker"})  # fmt: skip
        await wait_stream_seq(first, "v1", 5)
        await first.drop()
        second = await connect(srv.url, recorders())
        assert await second.call("resume", {"request_id": "v1", "last_seq": 5}) == {"ok": True}
        await second.terminal("v1", timeout=20)
        assert_joined(first, second, "v1", 5)


@pytest.mark.redis
async def test_resume_mid_reasoning_on_another_node(
    two_nodes: Callable[..., Any],
    upstream: UpstreamDouble,
    recorders: Callable[[], Recorder],
    redis_client: aioredis.Redis,
) -> None:
    upstream.scenarios["thinker"] = THINKER
    async with two_nodes(RESUME_GRACE_S="5", TOKEN_COALESCE_MS="0") as (one, two):
        first = await connect(one.url, recorders())
        await first.call("chat", {"request_id": "v2", "messages": [{"role": "user",
                          "content": "hi"}], "model": "double/thinker"})  # fmt: skip
        await wait_stream_seq(first, "v2", 5)
        await first.drop()
        second = await connect(two.url, recorders())
        assert await second.call("resume", {"request_id": "v2", "last_seq": 5}) == {"ok": True}
        await second.terminal("v2", timeout=30)
        assert_joined(first, second, "v2", 5)


@pytest.mark.redis
async def test_room_broadcast_of_reasoning_across_nodes(
    two_nodes: Callable[..., Any],
    upstream: UpstreamDouble,
    recorders: Callable[[], Recorder],
    redis_client: aioredis.Redis,
) -> None:
    upstream.scenarios["thinker"] = THINKER
    async with two_nodes() as (one, two):
        alice = await connect(one.url, recorders())
        bob = await connect(two.url, recorders(), "bob")
        for rec in (alice, bob):
            assert (await rec.call("join", {"room": "deep"}))["ok"] is True
        message = {"role": "user", "content": "hi"}
        ack = await alice.call(
            "chat",
            {"request_id": "v3", "messages": [message], "model": "double/thinker", "room": "deep"},
        )
        assert ack["ok"] is True
        for rec in (alice, bob):
            assert (await rec.terminal("v3", timeout=20))[0] == "done"
        seen = [[(e, d) for e, d in rec.of("v3") if e in STREAM_EVENTS] for rec in (alice, bob)]
        assert seen[0] == seen[1]
        assert [d["seq"] for _, d in seen[1]] == list(range(len(seen[1])))
        assert "".join(d["content"] for e, d in seen[1] if e == "reasoning") == "".join(THOUGHTS)
        assert all(d["room"] == "deep" for _, d in seen[1])


@pytest.mark.redis
async def test_a_killed_node_ends_the_resumed_stream_with_server_shutdown_and_last_seq(
    two_nodes: Callable[..., Any],
    upstream: UpstreamDouble,
    recorders: Callable[[], Recorder],
    redis_client: aioredis.Redis,
) -> None:
    upstream.scenarios["long_thinker"] = Scenario(
        name="long_thinker", reasoning=[f"t{i} " for i in range(600)], reasoning_delay_s=0.05
    )
    async with two_nodes(TOKEN_COALESCE_MS="0") as (one, two):
        owner = await connect(one.url, recorders())
        await owner.call("chat", {"request_id": "v4", "messages": [{"role": "user",
                          "content": "hi"}], "model": "double/long_thinker"})  # fmt: skip
        await wait_stream_seq(owner, "v4", 3)
        watcher = await connect(two.url, recorders())
        assert await watcher.call("resume", {"request_id": "v4", "last_seq": 1}) == {"ok": True}
        await wait_stream_seq(watcher, "v4", 6)
        await one.stop(sig=9)
        event, error = await watcher.terminal("v4", timeout=25)
        assert (event, error["code"]) == ("error", "server_shutdown")
        replayed = [d["seq"] for e, d in watcher.of("v4") if e in STREAM_EVENTS]
        assert replayed == list(range(2, 2 + len(replayed)))
        assert error["last_seq"] == replayed[-1]
