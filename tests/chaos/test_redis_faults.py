"""Faults 1 and 5, on a private redis-server: a resume through a long silence, and a
Redis that hangs (SIGSTOP) then comes back (SIGCONT)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.harness import Recorder, run_server
from tests.integration.resume_helpers import chat, connect
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import Scenario

PrivateRedis = tuple[str, "subprocess.Popen[bytes]"]


@pytest.mark.chaos("1 Redis resume after silence")
@pytest.mark.timeout(90)
async def test_a_resume_waits_through_a_silence_longer_than_every_redis_timeout(
    upstream: UpstreamDouble,
    settings_for: Callable[..., Any],
    recorders: Callable[[], Recorder],
    private_redis: PrivateRedis,
) -> None:
    # 7 s without a token: longer than XREAD's block (5 s) and REDIS_TIMEOUT_S
    upstream.scenarios["silent"] = Scenario(name="silent", first_token_delay_s=7)
    settings = settings_for(
        redis_url=private_redis[0],
        redis_timeout_s=1,
        upstream_first_token_timeout_s=30,
        resume_grace_s=30,
    )
    async with run_server(settings) as srv:
        first = await connect(srv.url, recorders())
        assert (await first.call("chat", chat("q1", "double/silent")))["ok"] is True
        await first.drop()
        second = await connect(srv.url, recorders())
        ack = await second.call("resume", {"request_id": "q1", "last_seq": -1})
        assert ack == {"ok": True}, f"lost: the resume was refused: {ack}"
        event, end = await second.terminal("q1", timeout=30)
        assert event == "done", f"lost: the resumed stream ended with {end}"
        assert second.text("q1") == Scenario().text, "lost: text of the resumed stream"


@pytest.mark.chaos("5 hung Redis (SIGSTOP)")
@pytest.mark.timeout(90)
async def test_a_hung_redis_answers_every_request_in_time_and_service_returns(
    upstream: UpstreamDouble,
    settings_for: Callable[..., Any],
    recorders: Callable[[], Recorder],
    private_redis: PrivateRedis,
) -> None:
    url, proc = private_redis
    settings = settings_for(redis_url=url, redis_timeout_s=1, rate_limit_per_minute=10_000)
    async with run_server(settings) as srv, aiohttp.ClientSession() as http:
        before = await connect(srv.url, recorders())
        assert (await before.call("join", {"room": "lobby"}))["ok"] is True
        proc.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        slowest, answers, i = 0.0, [], 0
        try:
            while time.monotonic() - stopped_at < 12:  # the 12 s
                i += 1
                start = time.monotonic()
                rec = await asyncio.wait_for(connect(srv.url, recorders()), 5)
                ack = await rec.call("chat", chat(f"h{i}", "double/normal"), timeout=5)
                answers.append(ack.get("ok") or ack["error"]["code"])
                joined = await rec.call("join", {"room": "lobby"}, timeout=5)
                if not joined.get("ok"):
                    assert joined["error"]["code"] == "unavailable", joined
                    assert joined["error"]["retryable"] is True
                slowest = max(slowest, time.monotonic() - start)
                await rec.close()
            async with http.get(f"{srv.url}/health/ready") as resp:
                ready = await resp.json()
            assert ready["checks"]["redis"] != "ok", f"lost: readiness says {ready}"
        finally:
            proc.send_signal(signal.SIGCONT)
        assert slowest < 5, f"lost: a connect+chat+join took {slowest:.1f} s with Redis hung"
        assert "internal" not in answers, f"lost: answers {answers}"
        # back by itself: a room chat (Redis history) completes, readiness is ok again
        after = await connect(srv.url, recorders())
        deadline = time.monotonic() + 10
        while (joined := await after.call("join", {"room": "lobby"}))["ok"] is not True:
            assert time.monotonic() < deadline, f"lost: rooms never came back: {joined}"
            await asyncio.sleep(0.2)
        ack = await after.call("chat", chat("back", "double/normal", room="lobby"))
        assert ack["ok"] is True, f"lost: chat after SIGCONT: {ack}"
        event, end = await after.terminal("back", timeout=20)
        assert event == "done", f"lost: chat after SIGCONT ended {end}"
        async with http.get(f"{srv.url}/health/ready") as resp:
            assert (await resp.json())["checks"]["redis"] == "ok"
