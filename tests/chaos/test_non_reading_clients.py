"""Fault 3 (invariant 7): a client that stops reading — a real socket with a small receive
buffer — is cut off (its transport aborted) within SEND_TIMEOUT_S + 5 s, the server's
memory stays bounded meanwhile, and its stream is kept as for a lost transport: the
upstream request is closed RESUME_GRACE_S later, not at once and not never."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.chaos.processes import node_env
from tests.chaos.processes import start as start_node
from tests.chaos.rawws import OP_TEXT, RawWebSocket
from tests.harness import RunningServer, make_token, run_server
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import Scenario

pytestmark = [pytest.mark.chaos("3 clients that stop reading"), pytest.mark.timeout(90)]

SEND_TIMEOUT_S = 2.0
GRACE_S = 3.0
FLOOD = Scenario(name="flood", tokens=["x" * 20_000 + " "] * 100_000, delay_s=0.01)  # ~2 MB/s


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def cut_off_within(srv: RunningServer, limit_s: float) -> tuple[float, float]:
    """Wait until the server holds no connection; (seconds it took, RSS growth in MB)."""
    start, before, grown = time.monotonic(), rss_mb(), 0.0
    runtime = srv.app.runtime
    while len(runtime.connections) or runtime.sio.eio.sockets:
        grown = max(grown, rss_mb() - before)
        elapsed = time.monotonic() - start
        assert elapsed < limit_s, f"lost: still connected after {elapsed:.0f} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - start, grown


async def assert_aborted(ws: RawWebSocket) -> None:
    """The client's socket was reset (aborted), not closed with a handshake."""
    ws.writer.transport.resume_reading()  # type: ignore[attr-defined]
    try:
        while True:
            opcode, payload = await ws.frame(timeout=5)
            assert opcode == OP_TEXT or not payload, "lost: a close handshake, not an abort"
            if not payload and opcode != OP_TEXT:
                break
    except (ConnectionResetError, asyncio.IncompleteReadError):
        pass
    finally:
        ws.abort()


async def start_socketio_chat(ws: RawWebSocket) -> None:
    """Engine.IO open, Socket.IO connect, one chat (the client's whole conversation)."""
    opened = await ws.frame()
    assert opened[1].startswith(b"0{"), opened
    await ws.send_frame(OP_TEXT, b"40" + json.dumps({"token": make_token()}).encode())
    while not (await ws.frame())[1].startswith(b"40"):
        pass
    chat = {"request_id": "nr", "messages": [{"role": "user", "content": "hi"}]}
    await ws.send_frame(
        OP_TEXT, b"42" + json.dumps(["chat", {**chat, "model": "double/flood"}]).encode()
    )


async def run_non_reader(
    upstream: UpstreamDouble, settings_for: Callable[..., Any], path: str, start: Any
) -> None:
    upstream.scenarios["flood"] = FLOOD
    settings = settings_for(
        send_timeout_s=SEND_TIMEOUT_S,
        resume_grace_s=GRACE_S,
        upstream_idle_timeout_s=30,
        upstream_total_timeout_s=120,
    )
    async with run_server(settings) as srv:
        ws = await RawWebSocket.open(srv.port, path, make_token(), rcvbuf=4096)
        await start(ws)  # sends the chat…
        ws.stop_reading()  # …then never reads again
        recorded = await upstream.wait_for_request(1, timeout=10)
        took, grown = await cut_off_within(srv, SEND_TIMEOUT_S + 5)
        cut_at = time.monotonic()
        assert grown < 150, f"lost: server RSS grew {grown:.0f} MB while cutting off"
        await assert_aborted(ws)
        assert recorded.closed_at is None, "lost: the stream was stopped at once, not kept"
        waited = await upstream.wait_closed(recorded, timeout=GRACE_S + 10, since=cut_at)
        assert recorded.closed_by_client, "lost: the upstream request ran to its end"
        assert waited > GRACE_S - 1, f"lost: the upstream closed {waited:.1f} s after, not kept"
        print(f"cut off after {took:.1f} s, RSS +{grown:.0f} MB, upstream closed +{waited:.1f} s")


async def test_a_raw_websocket_client_that_stops_reading_is_cut_off(
    upstream: UpstreamDouble, settings_for: Callable[..., Any]
) -> None:
    async def start(ws: RawWebSocket) -> None:
        await ws.send_json(
            {"messages": [{"role": "user", "content": "hi"}], "model": "double/flood"}
        )

    await run_non_reader(upstream, settings_for, "/websockets/openrouter", start)


async def test_a_socketio_client_that_stops_reading_is_cut_off(
    upstream: UpstreamDouble, settings_for: Callable[..., Any]
) -> None:
    await run_non_reader(
        upstream, settings_for, "/socket.io/?EIO=4&transport=websocket", start_socketio_chat
    )


async def test_a_client_that_stops_reading_does_not_hold_a_shutdown(
    upstream: UpstreamDouble,
) -> None:
    upstream.scenarios["flood"] = FLOOD
    env = node_env(upstream.base_url, SHUTDOWN_GRACE_S="1", UPSTREAM_IDLE_TIMEOUT_S="30")
    node = await start_node(env)
    try:
        ws = await RawWebSocket.open(
            node.port, "/socket.io/?EIO=4&transport=websocket", make_token(), rcvbuf=4096
        )
        await start_socketio_chat(ws)
        ws.stop_reading()
        await upstream.wait_for_request(1, timeout=10)
        # let the flood fill the kernel's buffers and the server's queue (nothing to await
        # from outside the server process: it is the state the fault needs)
        await asyncio.sleep(3)
        stopped_at = time.monotonic()
        code = await node.stop(signal.SIGTERM, timeout=30)
        took = time.monotonic() - stopped_at
        ws.abort()
        assert code == 0, "".join(node.output)[-500:]
        assert took < 1 + 5, f"lost: the shutdown took {took:.0f} s (held by the client)"
    finally:
        if node.proc.returncode is None:
            node.proc.kill()
        await node.proc.wait()
