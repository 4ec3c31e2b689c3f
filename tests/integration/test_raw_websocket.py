"""The raw WebSocket endpoint `/websockets/openrouter` (PROTOCOL.md §2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.harness import RunningServer, make_token, run_server
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import NORMAL_TEXT

TEMPLATE_REQUEST = {
    "messages": [{"role": "user", "content": "Say hello"}],
    "model": "double/normal",
    "temperature": 1.0,
}


async def frames_until_terminal(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while True:
        frame = await ws.receive_json(timeout=10)
        frames.append(frame)
        if frame["type"] in ("done", "error"):
            return frames


def endpoint(server: RunningServer, query: str = "") -> str:
    return f"{server.ws_url}/websockets/openrouter{query}"


async def test_template_request_streams_typed_frames(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    headers = {"Authorization": f"Bearer {make_token('alice')}"}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(endpoint(server), headers=headers) as ws,
    ):
        await ws.send_json(TEMPLATE_REQUEST)
        frames = await frames_until_terminal(ws)
    tokens = [f for f in frames if f["type"] == "token"]
    assert [t["seq"] for t in tokens] == list(range(len(tokens)))
    assert "".join(t["content"] for t in tokens) == NORMAL_TEXT
    assert frames[-1]["type"] == "done"
    assert frames[-1]["usage"]["total_tokens"] > 0
    request_id = frames[-1]["request_id"]
    assert all(f["request_id"] == request_id for f in frames)
    assert upstream.requests[-1].body["temperature"] == 1.0


async def test_completion_format_forwards_upstream_chunks(server: RunningServer) -> None:
    token = make_token("alice")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(endpoint(server, f"?format=completion&token={token}")) as ws,
    ):
        await ws.send_json(TEMPLATE_REQUEST)
        frames = await frames_until_terminal(ws)
    completions = [f for f in frames if f["type"] == "completion"]
    assert not [f for f in frames if f["type"] == "token"]
    text = "".join(
        choice["delta"].get("content") or "" for f in completions for choice in f["data"]["choices"]
    )
    assert text == NORMAL_TEXT
    assert completions[0]["data"]["object"] == "chat.completion.chunk"
    assert frames[-1]["type"] == "done"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_payload"),
        (b"\x00\x01binary", "invalid_payload"),
        ("[1, 2]", "invalid_payload"),
        ('{"messages": []}', "invalid_payload"),
        ('{"messages": [{"role": "user", "content": "x"}], "room": "lobby"}', "invalid_payload"),
        ('{"messages": [{"role": "user", "content": "x"}], "bogus": 1}', "invalid_payload"),
        ('{"type": "launch"}', "invalid_payload"),
        ('{"type": "cancel", "request_id": "nope"}', "not_found"),
    ],
)
async def test_bad_frames_get_an_error_and_the_connection_stays(
    server: RunningServer, frame: str | bytes, code: str
) -> None:
    headers = {"Authorization": f"Bearer {make_token('alice')}"}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(endpoint(server), headers=headers) as ws,
    ):
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_str(frame)
        error = await ws.receive_json(timeout=5)
        assert error["type"] == "error"
        assert error["code"] == code
        assert error["retryable"] is False
        await ws.send_json(TEMPLATE_REQUEST)
        frames = await frames_until_terminal(ws)
        assert frames[-1]["type"] == "done"


async def test_cancel_closes_the_upstream(server: RunningServer, upstream: UpstreamDouble) -> None:
    headers = {"Authorization": f"Bearer {make_token('alice')}"}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(endpoint(server), headers=headers) as ws,
    ):
        await ws.send_json({**TEMPLATE_REQUEST, "model": "double/slow", "request_id": "w1"})
        first = await ws.receive_json(timeout=5)
        assert first["type"] == "token"
        await ws.send_json({"type": "cancel", "request_id": "w1"})
        frames = await frames_until_terminal(ws)
        assert frames[-1]["type"] == "done"
        assert frames[-1]["finish_reason"] == "cancelled"
        recorded = upstream.requests[-1]
        assert await upstream.wait_closed(recorded, timeout=1) < 1
        assert recorded.closed_by_client


@pytest.mark.parametrize(
    "token",
    [None, "garbage", make_token("alice", secret="wrong-secret-wrong-secret-wrong!!")],
)
async def test_refused_token_closes_with_4401(server: RunningServer, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(endpoint(server), headers=headers) as ws,
    ):
        error = await ws.receive_json(timeout=5)
        assert error["type"] == "error"
        assert error["code"] == "unauthorized"
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 4401


async def test_expired_token_closes_with_4401_token_expired(server: RunningServer) -> None:
    token = make_token("alice", ttl=-60)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(endpoint(server, f"?token={token}")) as ws,
    ):
        error = await ws.receive_json(timeout=5)
        assert error["code"] == "token_expired"
        await ws.receive(timeout=5)
    assert ws.close_code == 4401


async def test_frame_over_max_frame_bytes_closes_with_1009(
    upstream: UpstreamDouble, settings_for: Callable[..., Any]
) -> None:
    async with run_server(settings_for(max_frame_bytes=4096)) as srv:
        headers = {"Authorization": f"Bearer {make_token('alice')}"}
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(endpoint(srv), headers=headers) as ws,
        ):
            await ws.send_str("x" * 10_000)
            msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1009
