"""Fault 7: a raw close frame with no status code is deliberate (the upstream stops at
once); fault 8: a frame over ``MAX_FRAME_BYTES`` closes with 1009 under plain uvicorn too."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from tests.chaos.processes import PLAIN_UVICORN, node_env, running
from tests.chaos.rawws import OP_CLOSE, OP_TEXT, RawWebSocket
from tests.harness import make_token, run_server
from tests.upstream_double import UpstreamDouble

PATH = "/websockets/openrouter"
CHAT = {"messages": [{"role": "user", "content": "hi"}], "model": "double/slow"}


@pytest.mark.chaos("7 raw close without a status code")
async def test_a_close_frame_without_a_code_stops_the_upstream_at_once(
    upstream: UpstreamDouble, settings_for: Callable[..., Any]
) -> None:
    async with run_server(settings_for(resume_grace_s=30)) as srv:
        ws = await RawWebSocket.open(srv.port, PATH, make_token())
        await ws.send_json(CHAT)
        first = await ws.json()
        assert first["type"] == "token", first
        recorded = upstream.requests[-1]
        await ws.send_frame(OP_CLOSE, b"")  # no status code: the server sees 1005
        await ws.close_code()
        ws.abort()
        waited = await upstream.wait_closed(recorded, timeout=10)
        assert recorded.closed_by_client, "lost: the upstream ran to its end"
        assert waited < 3, f"lost: the upstream ran on for {waited:.1f} s (kept for resume)"


@pytest.mark.chaos("8 frame cap (and serving settings) under plain uvicorn")
async def test_plain_uvicorn_applies_the_frame_cap_and_the_serving_settings(
    upstream: UpstreamDouble,
) -> None:
    env = node_env(
        upstream.base_url,
        MAX_FRAME_BYTES=str(2 * 1024 * 1024),
        HTTP_HEADER_TIMEOUT_S="1",
        RESUME_GRACE_S="30",
    )
    async with running(env, PLAIN_UVICORN) as node:
        ws = await RawWebSocket.open(node.port, PATH, make_token())
        await ws.send_frame_start(OP_TEXT, 3 * 1024 * 1024)  # a 3 MiB text frame begins
        code = await ws.close_code(timeout=20)
        ws.abort()
        assert code == 1009, f"lost: a 3 MiB frame got close code {code}, not 1009"
        # a transport lost without a close frame is not a deliberate close: kept for resume
        ws = await RawWebSocket.open(node.port, PATH, make_token())
        await ws.send_json(CHAT)
        assert (await ws.json())["type"] == "token"
        recorded = upstream.requests[-1]
        ws.abort()
        with contextlib.suppress(TimeoutError):  # it must not end: the wait runs out
            await upstream.wait_closed(recorded, timeout=2)
        assert recorded.closed_at is None, "lost: a dropped connection stopped its stream"
        # request headers that never finish are cut off by the header deadline
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        try:
            closed = await asyncio.wait_for(reader.read(), 5)
        except TimeoutError:
            raise AssertionError("lost: unfinished headers held a connection") from None
        finally:
            writer.close()
        assert closed in (b"", b"HTTP/1.1 408"), closed
