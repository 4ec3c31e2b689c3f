"""`resume` with the stream log in Redis: across two server processes, and memory bounds.

Every test uses its own key prefix on the real Redis (127.0.0.1:6379) and removes its keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from tests.harness import (
    API_KEY,
    JWT_SECRET,
    Recorder,
    SpawnedServer,
    assert_clean_stream,
    run_server,
    spawn_server,
)
from tests.integration.resume_helpers import (
    assert_live_then_replay,
    assert_resumed_stream,
    chat,
    connect,
    kept_text,
    wait_seq,
)
from tests.integration.test_resume import run_many_over_websocket
from tests.tcp_proxy import tcp_proxy
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import SLOW_TEXT, Scenario

Settings = Callable[..., Any]
pytestmark = pytest.mark.redis


async def stream_keys(client: aioredis.Redis, prefix: str) -> list[bytes]:
    """The stream log's keys under ``prefix`` (streams, metas, request-id index)."""
    return [
        key
        for kind in ("log", "meta", "rid")
        async for key in client.scan_iter(match=f"{prefix}{kind}:*", count=1000)
    ]


@pytest.fixture
def two_nodes(
    upstream: UpstreamDouble, redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> Callable[..., Any]:
    """Start two ``python -m server`` processes sharing Redis; stopped after the test."""

    @contextlib.asynccontextmanager
    async def start(**env: str) -> AsyncIterator[tuple[SpawnedServer, SpawnedServer]]:
        full = {
            "JWT_SECRET": JWT_SECRET,
            "OPENROUTER_API_KEY": API_KEY,
            "OPENROUTER_BASE_URL": upstream.base_url,
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": key_prefix,
            "UPSTREAM_FIRST_TOKEN_TIMEOUT_S": "10",
            "SHUTDOWN_GRACE_S": "1",
            "LOG_LEVEL": "warning",
            **env,
        }
        nodes = await asyncio.gather(spawn_server(full), spawn_server(full))
        try:
            yield nodes[0], nodes[1]
        finally:
            await asyncio.gather(*(node.stop() for node in nodes))

    return start


async def test_drop_on_node_one_resume_on_node_two_gives_the_exact_text(
    two_nodes: Callable[..., Any], upstream: UpstreamDouble, recorders: Callable[[], Recorder]
) -> None:
    k = 6
    # A grace period far shorter than the stream: only the resume keeps it running.
    async with two_nodes(RESUME_GRACE_S="1") as (one, two):
        first = await connect(one.url, recorders())
        assert (await first.call("chat", chat("x1")))["ok"] is True
        await wait_seq(first, "x1", k - 1)
        recorded = upstream.requests[-1]
        await first.drop()
        second = await connect(two.url, recorders())
        assert await second.call("resume", {"request_id": "x1", "last_seq": k - 1}) == {"ok": True}
        event, done = await second.terminal("x1", timeout=40)
        assert (event, done["finish_reason"]) == ("done", "stop")
        assert_resumed_stream(second, "x1", k)
        assert kept_text(first, "x1", k) + second.text("x1") == SLOW_TEXT
        assert recorded.completed
        assert not recorded.closed_by_client


async def test_a_resumer_lost_on_node_two_lets_node_one_abandon_after_grace(
    two_nodes: Callable[..., Any], upstream: UpstreamDouble, recorders: Callable[[], Recorder]
) -> None:
    async with two_nodes(RESUME_GRACE_S="1") as (one, two):
        first = await connect(one.url, recorders())
        await first.call("chat", chat("x2"))
        await wait_seq(first, "x2", 1)
        recorded = upstream.requests[-1]
        await first.drop()
        second = await connect(two.url, recorders())
        await second.call("resume", {"request_id": "x2", "last_seq": 1})
        await asyncio.sleep(1.5)
        assert recorded.closed_at is None, "abandoned although resumed"
        await second.drop()
        await upstream.wait_closed(recorded, timeout=10)
        assert recorded.closed_by_client
        third = await connect(two.url, recorders())
        await third.call("resume", {"request_id": "x2", "last_seq": -1})
        event, done = await third.terminal("x2")
        assert (event, done["finish_reason"]) == ("done", "cancelled")
        assert_clean_stream(third, "x2")


async def test_cancel_on_node_two_stops_the_generation_on_node_one(
    two_nodes: Callable[..., Any], upstream: UpstreamDouble, recorders: Callable[[], Recorder]
) -> None:
    async with two_nodes() as (one, two):
        phone = await connect(one.url, recorders())
        await phone.call("chat", chat("x3"))
        await wait_seq(phone, "x3", 0)
        recorded = upstream.requests[-1]
        laptop = await connect(two.url, recorders())
        bob = await connect(two.url, recorders(), "bob")
        refused = await bob.call("cancel", {"request_id": "x3"})
        assert refused["error"]["code"] == "not_found"
        assert await laptop.call("cancel", {"request_id": "x3"}) == {"ok": True}
        assert await upstream.wait_closed(recorded, timeout=3) < 3
        assert recorded.closed_by_client
        event, done = await phone.terminal("x3")
        assert (event, done["finish_reason"]) == ("done", "cancelled")
        assert_clean_stream(phone, "x3")
        again = await laptop.call("cancel", {"request_id": "x3"})
        assert again["error"]["code"] == "not_found"


async def test_resume_on_another_node_after_the_end_and_who_may(
    two_nodes: Callable[..., Any], upstream: UpstreamDouble, recorders: Callable[[], Recorder]
) -> None:
    upstream.scenarios["steady"] = Scenario(name="steady", text=SLOW_TEXT, delay_s=0.01)
    async with two_nodes(RESUME_RETENTION_S="3") as (one, two):
        rec = await connect(one.url, recorders())
        await rec.call("chat", chat("x4", "double/steady"))
        await rec.terminal("x4", timeout=20)
        original = rec.of("x4")
        later = await connect(two.url, recorders())
        assert await later.call("resume", {"request_id": "x4", "last_seq": 9}) == {"ok": True}
        await later.terminal("x4")
        assert later.of("x4") == original[10:]
        bob = await connect(two.url, recorders(), "bob")
        refused = await bob.call("resume", {"request_id": "x4", "last_seq": -1})
        assert refused["error"]["code"] == "forbidden"
        unknown = await bob.call("resume", {"request_id": "never", "last_seq": -1})
        assert unknown["error"]["code"] == "not_found"
        await asyncio.sleep(3.5)
        expired = await later.call("resume", {"request_id": "x4", "last_seq": -1})
        assert expired["error"]["code"] == "not_found"


async def test_redis_log_same_node_drop_and_resume(
    upstream: UpstreamDouble,
    settings_for: Settings,
    recorders: Callable[[], Recorder],
    redis_url: str,
    key_prefix: str,
    redis_client: aioredis.Redis,
) -> None:
    upstream.scenarios["quick"] = Scenario(name="quick", text=SLOW_TEXT, delay_s=0.05)
    settings = settings_for(redis_url=redis_url, redis_key_prefix=key_prefix)
    async with run_server(settings) as srv:
        first = await connect(srv.url, recorders())
        await first.call("chat", chat("y1", "double/quick"))
        await wait_seq(first, "y1", 9)
        await first.drop()
        second = await connect(srv.url, recorders())
        await second.call("resume", {"request_id": "y1", "last_seq": 9})
        # and once more on the same connection, from further back: replaces the first replay
        await wait_seq(second, "y1", 12)
        await second.call("resume", {"request_id": "y1", "last_seq": 11})
        event, _done = await second.terminal("y1", timeout=20)
        assert event == "done"
        await asyncio.sleep(0.3)
        seqs = [t["seq"] for t in second.tokens("y1")]
        cut = next(i for i in range(1, len(seqs)) if seqs[i] <= seqs[i - 1])
        assert seqs[:cut] == list(range(10, 10 + cut))
        assert seqs[cut:] == list(range(12, 12 + len(seqs) - cut))
        by_seq = {t["seq"]: t["content"] for t in second.tokens("y1")}
        rest = "".join(by_seq[s] for s in range(10, max(by_seq) + 1))
        assert kept_text(first, "y1", 10) + rest == SLOW_TEXT
        assert [e for e, _ in second.of("y1")].count("done") == 1


async def test_on_a_distant_redis_the_upstream_request_goes_out_while_the_log_opens(
    upstream: UpstreamDouble,
    settings_for: Settings,
    recorders: Callable[[], Recorder],
    redis_url: str,
    key_prefix: str,
    redis_client: aioredis.Redis,
) -> None:
    """Redis answers 150 ms late (a TCP proxy holds its replies): the upstream request is
    not held back by the stream log's opening (the ack follows the opening), and the log
    still holds every event: a resume from the middle gives the rest exactly once."""
    upstream.scenarios["quick"] = Scenario(name="quick", text=SLOW_TEXT, delay_s=0.05)
    where = urlsplit(redis_url)
    with tcp_proxy(where.hostname or "127.0.0.1", where.port or 6379, delay_ms=150) as (port, _):
        settings = settings_for(
            redis_url=f"redis://127.0.0.1:{port}/0", redis_key_prefix=key_prefix, redis_timeout_s=5
        )
        async with run_server(settings) as srv:
            first = await connect(srv.url, recorders())
            ack = await first.call("chat", chat("far1", "double/quick"), timeout=15)
            acked_at = time.monotonic()
            assert ack == {"ok": True, "request_id": "far1"}
            request = await upstream.wait_for_request()
            assert request.received_at < acked_at, "the upstream request waited for the log"
            await wait_seq(first, "far1", 4)
            await first.drop()
            second = await connect(srv.url, recorders())
            resumed = await second.call("resume", {"request_id": "far1", "last_seq": 4}, timeout=15)
            assert resumed == {"ok": True}
            event, _end = await second.terminal("far1", timeout=30)
            assert event == "done"
            assert_resumed_stream(second, "far1", 5)
            rest = "".join(t["content"] for t in second.tokens("far1"))
            assert kept_text(first, "far1", 5) + rest == SLOW_TEXT


async def test_redis_keys_are_gone_after_1000_finished_requests_and_the_retention(
    upstream: UpstreamDouble,
    settings_for: Settings,
    redis_url: str,
    key_prefix: str,
    redis_client: aioredis.Redis,
) -> None:
    settings = settings_for(
        redis_url=redis_url,
        redis_key_prefix=key_prefix,
        resume_retention_s=1.5,
        rate_limit_per_minute=5000,
        max_streams_per_user=64,
    )
    async with run_server(settings) as srv:
        await run_many_over_websocket(srv, 1000, parallel=8)
        assert await stream_keys(redis_client, key_prefix)  # the latest are kept for resume
        assert await srv.app.runtime.log.size() > 0
        deadline = time.monotonic() + 20
        while await stream_keys(redis_client, key_prefix) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert await stream_keys(redis_client, key_prefix) == []
        assert await srv.app.runtime.log.size() == 0
    assert sum(r.completed for r in upstream.requests) == 1000
    # a stopped node leaves no heartbeat behind either
    assert [key async for key in redis_client.scan_iter(match=f"{key_prefix}nodes:*")] == []


async def test_redis_log_resume_on_the_live_connection_never_duplicates(
    upstream: UpstreamDouble,
    settings_for: Settings,
    recorders: Callable[[], Recorder],
    redis_url: str,
    key_prefix: str,
    redis_client: aioredis.Redis,
) -> None:
    """With the Redis log the replay may read the terminal before the live copy is sent:
    the live copy must still be skipped (one ``done``)."""
    upstream.scenarios["quick"] = Scenario(name="quick", text=SLOW_TEXT, delay_s=0.02)
    # one token event per delta (no coalescing): the test waits for seq 40 of 50 deltas
    settings = settings_for(redis_url=redis_url, redis_key_prefix=key_prefix, token_coalesce_ms=0)
    async with run_server(settings) as srv:
        rec = await connect(srv.url, recorders())
        for round_ in range(3):
            rid = f"z{round_}"
            await rec.call("chat", chat(rid, "double/quick"))
            await wait_seq(rec, rid, 40)
            assert await rec.call("resume", {"request_id": rid, "last_seq": 35}) == {"ok": True}
            await rec.terminal(rid, timeout=20)
            await asyncio.sleep(0.3)
            assert_live_then_replay(rec, rid, 36, SLOW_TEXT)


async def test_room_members_resume_across_nodes_and_get_each_token_once(
    two_nodes: Callable[..., Any], upstream: UpstreamDouble, recorders: Callable[[], Recorder]
) -> None:
    """Alice asks in a room on node one; Bob is in the room on node two, so the answer
    reaches him live through Redis.  He resumes from further back: the live copies skip
    him (TailRegistry on node two) while the log feeds him, each token once.  Then he
    drops, comes back on node one, rejoins and resumes where he was."""
    upstream.scenarios["quick"] = Scenario(name="quick", text=SLOW_TEXT, delay_s=0.06)
    async with two_nodes() as (one, two):
        alice = await connect(one.url, recorders())
        bob = await connect(two.url, recorders(), "bob")
        carol = await connect(two.url, recorders(), "carol")
        for rec in (alice, bob):
            assert (await rec.call("join", {"room": "lobby"}))["ok"] is True
        ack = await alice.call("chat", chat("rr", "double/quick", room="lobby"))
        assert ack["ok"] is True, ack
        await wait_seq(bob, "rr", 6)
        assert await bob.call("resume", {"request_id": "rr", "last_seq": 2}) == {"ok": True}
        refused = await carol.call("resume", {"request_id": "rr", "last_seq": -1})
        assert refused["error"]["code"] == "forbidden"
        await wait_seq(bob, "rr", 20)
        seqs = [t["seq"] for t in bob.tokens("rr")]
        cut = next(i for i in range(1, len(seqs)) if seqs[i] <= seqs[i - 1])
        had = max(seqs[cut:])
        await bob.drop()
        back = await connect(one.url, recorders(), "bob")
        assert (await back.call("join", {"room": "lobby"}))["ok"] is True
        await back.call("resume", {"request_id": "rr", "last_seq": had})
        await back.terminal("rr", timeout=30)
        await alice.terminal("rr", timeout=30)
        await asyncio.sleep(0.5)
        assert seqs[:cut] == list(range(cut))  # live on node two until the resume
        assert seqs[cut:] == list(range(3, had + 1))  # then from the log, once each
        again = [t["seq"] for t in back.tokens("rr")]
        # back on node one: live from the rejoin, then the log from had + 1, once each
        cut2 = next((i for i in range(1, len(again)) if again[i] <= again[i - 1]), 0)
        assert again[cut2:] == list(range(had + 1, had + 1 + len(again) - cut2))
        assert again[:cut2] == list(range(again[0], again[0] + cut2))
        assert [e for e, _ in back.of("rr")].count("done") == 1
        by_seq = {t["seq"]: t["content"] for t in [*bob.tokens("rr"), *back.tokens("rr")]}
        assert sorted(by_seq) == list(range(len(by_seq)))
        assert "".join(by_seq[s] for s in range(len(by_seq))) == SLOW_TEXT
        assert_clean_stream(alice, "rr")
        assert carol.of("rr") == []
