"""Fault 6: room members on another node when Redis drops the publishes (a private Redis
stopped with SIGSTOP).  A short outage: the events wait and arrive late, in order, once
each.  A long one: what is lost for good ends the stream for them with one terminal
``error`` (``unavailable``) after what they got — never a silent gap."""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from tests.chaos.processes import node_env, start
from tests.harness import Recorder, SpawnedServer
from tests.integration.resume_helpers import chat, connect, wait_seq
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import Scenario

pytestmark = [pytest.mark.chaos("6 remote members when a publish fails"), pytest.mark.timeout(120)]

PrivateRedis = tuple[str, "subprocess.Popen[bytes]"]
STEADY = Scenario(name="steady", tokens=[f"t{i} " for i in range(120)], delay_s=0.1)


@asynccontextmanager
async def two_nodes(
    upstream: UpstreamDouble, redis_url: str
) -> AsyncIterator[tuple[SpawnedServer, SpawnedServer]]:
    env = node_env(
        upstream.base_url,
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=f"t{secrets.token_hex(4)}:",
        REDIS_TIMEOUT_S="0.5",  # publishes wait at most 10x this, then are given up
        TOKEN_COALESCE_MS="0",
        UPSTREAM_IDLE_TIMEOUT_S="30",
    )
    nodes = await asyncio.gather(start(env), start(env))
    try:
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            if node.proc.returncode is None:
                node.proc.kill()
            await node.proc.wait()


async def room_pair(one: SpawnedServer, two: SpawnedServer, recorders: Callable[[], Recorder]):
    alice = await connect(one.url, recorders())
    bob = await connect(two.url, recorders(), "bob")
    for rec in (alice, bob):
        for room in ("lobby", "hall"):
            assert (await rec.call("join", {"room": room}))["ok"] is True
    return alice, bob


async def outage(proc: subprocess.Popen[bytes], seconds: float) -> None:
    proc.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        proc.send_signal(signal.SIGCONT)


async def test_a_short_outage_delays_remote_events_without_a_gap(
    upstream: UpstreamDouble, recorders: Callable[[], Recorder], private_redis: PrivateRedis
) -> None:
    upstream.scenarios["steady"] = STEADY
    async with two_nodes(upstream, private_redis[0]) as (one, two):
        alice, bob = await room_pair(one, two, recorders)
        assert (await alice.call("chat", chat("p1", "double/steady", room="lobby")))["ok"]
        await wait_seq(bob, "p1", 3)
        await outage(private_redis[1], 2)
        event, end = await bob.terminal("p1", timeout=40)
        assert event == "done", f"lost: the remote member's stream ended {end}"
        seqs = [t["seq"] for t in bob.tokens("p1")]
        assert seqs == list(range(len(seqs))), f"lost: remote tokens not once each: {seqs}"
        await alice.terminal("p1", timeout=10)
        assert bob.text("p1") == alice.text("p1"), "lost: the remote member's text differs"


async def test_events_lost_for_good_end_the_stream_for_remote_members(
    upstream: UpstreamDouble, recorders: Callable[[], Recorder], private_redis: PrivateRedis
) -> None:
    """Two streams, so the publishes that fail (coalesced, PUBSUB_FLUSH_MS) hold both:
    each ends on its own for the remote member."""
    upstream.scenarios["steady"] = STEADY
    async with two_nodes(upstream, private_redis[0]) as (one, two):
        alice, bob = await room_pair(one, two, recorders)
        assert (await alice.call("chat", chat("p2", "double/steady", room="lobby")))["ok"]
        assert (await alice.call("chat", chat("p3", "double/steady", room="hall")))["ok"]
        for request_id in ("p2", "p3"):
            await wait_seq(bob, request_id, 3)
        await outage(private_redis[1], 7)  # longer than the 5 s publishes may wait
        for request_id in ("p2", "p3"):
            try:
                event, end = await bob.terminal(request_id, timeout=30)
            except TimeoutError:
                raise AssertionError(
                    f"lost: silence for the remote member ({request_id})"
                ) from None
            assert event == "error", f"lost: a gap, then {event} {end}"
            assert end["code"] == "unavailable", f"lost: ended with {end}"
            events = bob.of(request_id)
            assert events[-1][0] == "error", f"lost: events after the terminal: {events[-3:]}"
            seqs = [t["seq"] for t in bob.tokens(request_id)]
            assert seqs == list(range(len(seqs))), f"lost: a gap before the error: {seqs}"
        for request_id in ("p2", "p3"):
            event, _done = await alice.terminal(request_id, timeout=30)
            assert event == "done", "lost: the local member's stream suffered"
        await asyncio.sleep(0.5)
        for request_id in ("p2", "p3"):
            assert bob.of(request_id)[-1][0] == "error", "lost: events after the terminal"
