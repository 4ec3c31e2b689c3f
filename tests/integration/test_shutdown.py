"""Graceful shutdown of ``python -m server`` (the container's start command) on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import socketio

from tests.harness import (
    API_KEY,
    JWT_SECRET,
    Recorder,
    SpawnedServer,
    assert_clean_stream,
    make_token,
    spawn_server,
)
from tests.upstream_double import Scenario, UpstreamDouble

GRACE_S = 3
USER_MSG = [{"role": "user", "content": "Say hello"}]
# Finishes well inside the grace period; "double/slow" (50 tokens, 0.2 s apart) never does.
QUICK = Scenario(name="quick", text="one two three four five six seven eight", delay_s=0.05)

pytestmark = pytest.mark.timeout(90)


def server_env(upstream: UpstreamDouble, **extra: str) -> dict[str, str]:
    return {
        "JWT_SECRET": JWT_SECRET,
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": upstream.base_url,
        "SHUTDOWN_GRACE_S": str(GRACE_S),
        "UPSTREAM_MAX_RETRIES": "0",
        "LOG_LEVEL": "info",
        **extra,
    }


@pytest.fixture
async def spawned(upstream: UpstreamDouble) -> AsyncIterator[SpawnedServer]:
    upstream.scenarios["quick"] = QUICK
    server = await spawn_server(server_env(upstream))
    try:
        yield server
    finally:
        if server.proc.returncode is None:
            server.proc.kill()
            await server.proc.wait()


class RawClient:
    """A raw ``/websockets/openrouter`` client recording its frames."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(orjson.loads(msg.data))
        self.close_code = self.ws.close_code

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_str(orjson.dumps(frame).decode())

    async def wait_for(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for frame in self.frames:
                if frame.get("type") == kind:
                    return frame
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no {kind} frame; got {self.frames[-3:]!r}")

    async def closed(self, timeout: float = 10) -> None:
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)


async def test_sigterm_drains_streams_then_exits_zero(
    spawned: SpawnedServer, upstream: UpstreamDouble
) -> None:
    url = spawned.url
    alice, bob = Recorder(), Recorder()
    await alice.connect(url, make_token("alice"))
    await bob.connect(url, make_token("bob"))
    streams = {"a1": alice, "a2": alice, "b1": bob, "quick": alice}
    for rid, rec in streams.items():
        model = "double/quick" if rid == "quick" else "double/slow"
        ack = await rec.call("chat", {"request_id": rid, "messages": USER_MSG, "model": model})
        assert ack == {"ok": True, "request_id": rid}
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(
            f"{url}/websockets/openrouter",
            headers={"Authorization": f"Bearer {make_token('carol')}"},
        )
        raw = RawClient(ws)
        await raw.send({"request_id": "w1", "messages": USER_MSG, "model": "double/slow"})
        await raw.wait_for("token")
        for rid in ("a1", "a2", "b1"):
            await streams[rid].wait_for(lambda e, d, r=rid: e == "token" and d["request_id"] == r)
        await upstream.wait_for_request(5)

        sent_at = time.monotonic()
        spawned.proc.send_signal(signal.SIGTERM)

        # Readiness turns 503 at once, while liveness and the streams go on.
        async with http.get(f"{url}/health/ready") as resp:
            ready = await resp.json()
            assert resp.status == 503, ready
            assert ready["checks"]["shutdown"] == "shutting_down"
        async with http.get(f"{url}/health") as resp:
            assert resp.status == 200
        # New requests and new connections are refused with server_shutdown.
        refused = await bob.call("chat", {"request_id": "late", "messages": USER_MSG})
        assert refused["ok"] is False
        assert refused["error"]["code"] == "server_shutdown"
        assert refused["error"]["retryable"] is True
        late = Recorder()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await late.connect(url, make_token("dave"))
        assert late.connect_error["message"] == "server_shutdown"
        assert late.connect_error["data"]["code"] == "server_shutdown"
        late_ws = RawClient(
            await http.ws_connect(
                f"{url}/websockets/openrouter",
                headers={"Authorization": f"Bearer {make_token('erin')}"},
            )
        )
        await late_ws.closed()
        assert late_ws.frames[0]["code"] == "server_shutdown"
        assert late_ws.close_code == 1012

        code = await asyncio.wait_for(spawned.proc.wait(), GRACE_S + 10)
        elapsed = time.monotonic() - sent_at
        await raw.closed()

    output = "".join(spawned.output)
    assert code == 0, output
    assert elapsed < GRACE_S + 5, (elapsed, output)

    # Every stream got exactly one terminal event: the quick one finished, the rest
    # were ended with server_shutdown.
    event, done = assert_clean_stream(alice, "quick")
    assert (event, done["finish_reason"]) == ("done", "stop")
    for rid in ("a1", "a2", "b1"):
        event, error = assert_clean_stream(streams[rid], rid)
        assert event == "error", error
        assert (error["code"], error["retryable"]) == ("server_shutdown", True)
        assert 0 < len(streams[rid].tokens(rid)) < 50
    terminal = [f for f in raw.frames if f.get("type") in ("done", "error")]
    assert len(terminal) == 1
    assert terminal[0]["code"] == "server_shutdown"
    assert terminal[0]["request_id"] == "w1"

    # The upstream saw every connection closed: finished, or closed by the server.
    assert len(upstream.requests) == 5
    for recorded in upstream.requests:
        await upstream.wait_closed(recorded, timeout=2)
        assert recorded.completed or recorded.closed_by_client, recorded
    assert sum(r.closed_by_client for r in upstream.requests) == 4
    for rec in (alice, bob):
        assert rec.events[-1][0] == "disconnect"


async def test_sigterm_with_nothing_in_flight_exits_at_once(spawned: SpawnedServer) -> None:
    sent_at = time.monotonic()
    code = await spawned.stop(signal.SIGINT, timeout=GRACE_S + 10)
    assert code == 0, "".join(spawned.output)
    assert time.monotonic() - sent_at < GRACE_S


async def test_second_signal_skips_the_grace_period(
    upstream: UpstreamDouble,
) -> None:
    server = await spawn_server(server_env(upstream, SHUTDOWN_GRACE_S="60"))
    try:
        rec = Recorder()
        await rec.connect(server.url, make_token("alice"))
        await rec.call("chat", {"request_id": "s", "messages": USER_MSG, "model": "double/slow"})
        await rec.wait_for(lambda e, d: e == "token")
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert server.proc.returncode is None, "exited before the grace period"
        sent_at = time.monotonic()
        code = await server.stop(signal.SIGTERM, timeout=15)
        assert code == 0, "".join(server.output)
        assert time.monotonic() - sent_at < 10
        event, error = assert_clean_stream(rec, "s")
        assert (event, error["code"]) == ("error", "server_shutdown")
    finally:
        if server.proc.returncode is None:
            server.proc.kill()
            await server.proc.wait()
