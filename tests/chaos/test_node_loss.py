"""Fault 2 (invariant 6): a node killed with SIGKILL mid-stream.  Room members on the
other node, and the owner resuming there, get what was logged and then
``server_shutdown`` within 20 s — never ``internal``, never silence."""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.chaos.processes import node_env, start
from tests.harness import Recorder
from tests.integration.resume_helpers import assert_ends_with_shutdown, chat, connect, wait_seq
from tests.upstream_double import UpstreamDouble

pytestmark = [pytest.mark.chaos("2 node loss (SIGKILL)"), pytest.mark.timeout(120)]

INVARIANT_S = 20.0


async def test_a_killed_node_ends_its_streams_for_everyone_with_server_shutdown(
    upstream: UpstreamDouble,
    recorders: Callable[[], Recorder],
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    env = node_env(
        upstream.base_url,
        REDIS_URL=private_redis[0],
        REDIS_KEY_PREFIX=f"t{secrets.token_hex(4)}:",
        NODE_LEASE_S="3",
        RESUME_GRACE_S="30",
    )
    one, two = await asyncio.gather(start(env), start(env))
    try:
        alice = await connect(one.url, recorders())
        bob = await connect(two.url, recorders(), "bob")
        for rec in (alice, bob):
            assert (await rec.call("join", {"room": "lobby"}))["ok"] is True
        ack = await alice.call("chat", chat("k1", "double/slow", room="lobby"))
        assert ack["ok"] is True, ack
        await wait_seq(bob, "k1", 3)
        one.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await one.proc.wait()
        # bob, in the room on the other node: what came, then server_shutdown
        try:
            await bob.terminal("k1", timeout=INVARIANT_S)
        except TimeoutError:
            raise AssertionError("lost: silence for the room member on the other node") from None
        took = time.monotonic() - killed_at
        assert took < INVARIANT_S, f"lost: the member waited {took:.0f} s"
        assert_ends_with_shutdown(bob, "k1", 0)
        # alice comes back on the other node and resumes: the log, then server_shutdown
        back = await connect(two.url, recorders())
        assert (await back.call("join", {"room": "lobby"}))["ok"] is True
        ack = await back.call("resume", {"request_id": "k1", "last_seq": 1})
        assert ack == {"ok": True}, f"lost: the resume answered {ack}"
        try:
            await back.terminal("k1", timeout=INVARIANT_S)
        except TimeoutError:
            raise AssertionError("lost: silence for the resuming owner") from None
        took = time.monotonic() - killed_at
        assert took < INVARIANT_S + 1, f"lost: the owner waited {took:.0f} s"
        assert_ends_with_shutdown(back, "k1", 2)
    finally:
        for node in (one, two):
            if node.proc.returncode is None:
                node.proc.kill()
            await node.proc.wait()
