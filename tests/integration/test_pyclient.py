"""The Python client library against a real server and the upstream double."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from llm_relay_client import ChatClient, ChatError, Stream, SyncChatClient
from tests.harness import RunningServer, make_token, run_server
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import NORMAL_TEXT, PARTIAL_SENT, SLOW_TEXT, UTF8_TEXT


def client_for(server: RunningServer, sub: str = "alice", **options: Any) -> ChatClient:
    return ChatClient(server.url, token=make_token(sub, name=sub.title()), **options)


async def test_stream_yields_the_answer_then_done(server: RunningServer) -> None:
    async with client_for(server) as client:
        assert client.session is not None
        assert client.session.user.id == "alice"
        stream = client.stream("Say hello", model="double/split_utf8")
        pieces = [text async for text in stream]
        assert len(pieces) > 1
        assert "".join(pieces) == UTF8_TEXT == stream.text
        assert stream.done is not None
        assert stream.done.finish_reason == "stop"
        assert stream.done.model == "double/split_utf8"
        assert stream.done.usage.total_tokens is not None
        assert stream.done.usage.total_tokens > 0
        assert client.last_done == stream.done


async def test_complete_returns_the_whole_text_and_sends_options(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    async with client_for(server) as client:
        text = await client.complete(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            model="double/normal",
            temperature=0.5,
            max_tokens=20,
        )
        assert text == NORMAL_TEXT
        assert client.last_done is not None
        assert client.last_done.finish_reason == "stop"
    body = upstream.requests[-1].body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("double/normal", 0.5, 20)


async def test_cancel_ends_the_stream_and_closes_the_upstream(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    async with client_for(server) as client:
        stream = client.stream("Count", model="double/slow")
        received = []
        async for text in stream:
            received.append(text)
            if len(received) == 2:
                await stream.cancel()
        recorded = upstream.requests[-1]
        assert stream.done is not None
        assert stream.done.cancelled
        assert SLOW_TEXT.startswith(stream.text)
        assert len(stream.text) < len(SLOW_TEXT)
        await upstream.wait_closed(recorded, timeout=5)
        assert recorded.closed_by_client
        # the connection stays usable
        assert await client.complete("again", model="double/normal") == NORMAL_TEXT


async def test_leaving_async_with_early_cancels_the_request(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    async with client_for(server) as client:
        async with client.stream("Count", model="double/slow") as stream:
            async for _text in stream:
                break
        recorded = upstream.requests[-1]
        await upstream.wait_closed(recorded, timeout=5)
        assert recorded.closed_by_client


@pytest.mark.parametrize(
    ("model", "code", "retryable", "text"),
    [
        ("double/http_402", "insufficient_credits", False, ""),
        ("double/http_429", "upstream_rate_limited", True, ""),
        ("double/mid_stream_error", "upstream_error", True, PARTIAL_SENT),
    ],
)
async def test_upstream_failures_raise_chat_error(
    upstream: UpstreamDouble,
    settings_for: Callable[..., Any],
    model: str,
    code: str,
    retryable: bool,
    text: str,
) -> None:
    async with run_server(settings_for(upstream_max_retries=0)) as srv, client_for(srv) as client:
        stream = client.stream("Hi", model=model)
        received: list[str] = []
        with pytest.raises(ChatError) as caught:
            await read_into(stream, received)
        error = caught.value
        assert (error.code, error.retryable) == (code, retryable)
        assert error.request_id == stream.request_id
        if code == "upstream_rate_limited":
            assert error.retry_after is not None
            assert error.retry_after > 0
        assert "".join(received) == text
        assert stream.error is error
        # complete() raises the same way
        with pytest.raises(ChatError) as again:
            await client.complete("Hi", model=model)
        assert again.value.code == code


async def test_refused_requests_raise_with_details(
    upstream: UpstreamDouble, settings_for: Callable[..., Any]
) -> None:
    settings = settings_for(
        allowed_models="double/normal", default_model="double/normal", rate_limit_per_minute=2
    )
    async with run_server(settings) as srv, client_for(srv) as client:
        with pytest.raises(ChatError) as bad_model:
            await client.complete("Hi", model="double/slow")
        assert (bad_model.value.code, bad_model.value.retryable) == ("model_not_allowed", False)
        with pytest.raises(ChatError) as invalid:
            await client.complete([{"role": "robot", "content": "x"}], model="double/normal")
        assert invalid.value.code == "invalid_payload"
        assert invalid.value.details
        assert invalid.value.details[0]["field"].startswith("messages.0")
        assert await client.complete("Hi", model="double/normal") == NORMAL_TEXT
        assert await client.complete("Hi", model="double/normal") == NORMAL_TEXT
        with pytest.raises(ChatError) as limited:
            await client.complete("Hi", model="double/normal")
        assert (limited.value.code, limited.value.retryable) == ("rate_limited", True)
        assert limited.value.retry_after is not None
        with pytest.raises(ChatError) as unknown:
            await client.cancel("no-such-request")
        assert unknown.value.code == "not_found"


async def test_refused_connection_raises_auth_errors(server: RunningServer) -> None:
    with pytest.raises(ChatError) as bad:
        async with ChatClient(server.url, token="not-a-jwt"):
            pass
    assert bad.value.code == "unauthorized"
    assert bad.value.is_auth
    with pytest.raises(ChatError) as expired:
        async with ChatClient(server.url, token=make_token("alice", ttl=-10)):
            pass
    assert expired.value.code == "token_expired"
    with pytest.raises(ChatError) as missing:
        async with ChatClient(server.url):
            pass
    assert missing.value.code == "unauthorized"


async def test_unreachable_server_is_a_connection_error() -> None:
    from bench.procs import free_port

    client = ChatClient(f"http://127.0.0.1:{free_port()}", token="x", timeout=2)
    with pytest.raises(ChatError) as caught:
        await client.connect()
    assert (caught.value.code, caught.value.retryable) == ("connection_error", True)


async def test_token_may_be_a_function_called_on_each_connect(server: RunningServer) -> None:
    calls: list[int] = []

    async def token() -> str:
        calls.append(1)
        return make_token("carol")

    async with ChatClient(server.url, token=token) as client:
        assert client.session is not None
        assert client.session.user.id == "carol"
    assert calls == [1]


async def test_close_is_a_deliberate_disconnect(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    """close() mid-stream: the server sees the DISCONNECT packet and closes the upstream
    at once instead of keeping it for the resume grace period (30 s here)."""
    client = client_for(server)
    await client.connect()
    stream = client.stream("Count", model="double/slow")
    async for _text in stream:
        break
    recorded = upstream.requests[-1]
    await client.close()
    await upstream.wait_closed(recorded, timeout=5)
    assert recorded.closed_by_client
    with pytest.raises(ChatError) as caught:
        async for _text in stream:
            pass
    assert caught.value.code == "closed"


async def test_stream_survives_a_killed_transport(
    upstream: UpstreamDouble, settings_for: Callable[..., Any]
) -> None:
    async with run_server(settings_for(resume_grace_s=20)) as srv, client_for(srv) as client:
        first_sid = client.session.sid if client.session else None
        stream = client.stream("Count", model="double/slow")
        pieces: list[str] = []
        killed = 0
        async for text in stream:
            pieces.append(text)
            if len(pieces) in (3, 20):
                await kill_transport(client)
                killed += 1
        assert killed == 2
        assert "".join(pieces) == SLOW_TEXT
        assert stream.done is not None
        assert stream.done.finish_reason == "stop"
        assert client.session is not None
        assert client.session.sid != first_sid
        assert len(upstream.requests) == 1
        assert upstream.requests[0].completed


async def test_a_request_sent_as_the_transport_dies_is_neither_lost_nor_doubled(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    async with client_for(server) as client:
        stream = client.stream("Hi", model="double/normal")
        await stream.start()  # the chat packet is queued, not yet written
        await kill_transport(client)
        assert "".join([text async for text in stream]) == NORMAL_TEXT
        assert stream.done is not None
        assert len(upstream.requests) == 1


async def test_a_refused_reconnect_fails_the_open_stream(server: RunningServer) -> None:
    tokens = iter([make_token("alice"), "revoked"])

    def token() -> str:
        return next(tokens, "revoked")

    async with ChatClient(server.url, token=token) as client:
        stream = client.stream("Count", model="double/slow")
        received: list[str] = []
        await stream.start()
        assert await stream.__anext__()
        await kill_transport(client)
        with pytest.raises(ChatError) as caught:
            await read_into(stream, received)
        assert caught.value.code == "unauthorized"
        assert not client.connected


async def test_refresh_hands_the_server_a_newer_token(server: RunningServer) -> None:
    async with client_for(server) as client:
        newer = make_token("alice", ttl=7200)
        expires_at = await client.refresh(newer)
        assert expires_at > time.time() + 3600
        with pytest.raises(ChatError) as other_user:
            await client.refresh(make_token("mallory"))
        assert other_user.value.code == "forbidden"


async def read_into(stream: Stream, received: list[str]) -> None:
    async for piece in stream:
        received.append(piece)


async def kill_transport(client: ChatClient) -> None:
    """Drop the WebSocket under the client without a Socket.IO DISCONNECT (a network cut)."""
    transport = client._link.sio.eio.ws._conn.transport
    transport.abort()
    await asyncio.sleep(0)


async def test_sync_client_streams_completes_and_cancels(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    def script() -> tuple[list[str], str | None, str, bool]:
        with SyncChatClient(server.url, token=make_token("dave")) as client:
            stream = client.stream("Hi", model="double/normal")
            pieces = list(stream)
            reason = stream.done.finish_reason if stream.done else None
            whole = client.complete("Hi", model="double/split_utf8")
            slow = client.stream("Count", model="double/slow")
            next(slow)
            slow.cancel()
            rest = list(slow)
            cancelled = slow.done is not None and slow.done.cancelled and len(rest) < 49
        return pieces, reason, whole, cancelled

    pieces, reason, whole, cancelled = await asyncio.to_thread(script)
    assert "".join(pieces) == NORMAL_TEXT
    assert reason == "stop"
    assert whole == UTF8_TEXT
    assert cancelled
    await upstream.wait_closed(upstream.requests[-1], timeout=5)
    assert upstream.requests[-1].closed_by_client
