"""The upstream client against the upstream double: protocol v2 (reasoning, tool calls,
usage details, in-stream errors, dialects, connection reuse)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from services.upstream.base import (
    Chunk,
    Dialect,
    ModelListError,
    ToolCallDelta,
    UpstreamError,
    UpstreamFailure,
)
from services.upstream.client import UpstreamClient, UpstreamSettings
from services.upstream.failures import TEXT
from tests.unit.upstream_server import Observer
from tests.unit.upstream_server import make as make_client
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import (
    DETAILED_USAGE,
    ENCRYPTED_DETAIL,
    NORMAL_TEXT,
    PARALLEL_TOOL_CALLS,
    REASONING_TEXT,
    STREAM_429,
)

KEY = "sk-or-v2-test-key"
# over upstream_server.make's test settings: the library's connect, total and retry limits
_LIBRARY = UpstreamSettings("", "", "", "")
V2_SETTINGS: dict[str, Any] = {
    "connect_timeout_s": _LIBRARY.connect_timeout_s,
    "first_token_timeout_s": 5,
    "idle_timeout_s": 5,
    "total_timeout_s": _LIBRARY.total_timeout_s,
    "max_retries": _LIBRARY.max_retries,
}
MESSAGES = [{"role": "user", "content": "hi"}]
MakeClient = Callable[..., Awaitable[UpstreamClient]]


@pytest.fixture
async def up() -> AsyncIterator[UpstreamDouble]:
    async with UpstreamDouble() as double:
        yield double


@pytest.fixture
async def client_for() -> AsyncIterator[MakeClient]:
    made: list[UpstreamClient] = []

    async def make(
        double: UpstreamDouble, observer: Any = None, **overrides: Any
    ) -> UpstreamClient:
        return await make_client(
            made, double.base_url, observer, **{**V2_SETTINGS, "api_key": KEY, **overrides}
        )

    yield make
    for client in made:
        await client.aclose()


async def chunks(client: UpstreamClient, model: str, **fields: Any) -> list[Chunk]:
    body = {"model": model, "messages": MESSAGES, **fields}
    return [chunk async for batch in client.stream(body) for chunk in batch]


async def collect_into(client: UpstreamClient, model: str, seen: list[Chunk]) -> None:
    async for batch in client.stream({"model": model, "messages": MESSAGES}):
        seen += batch


def text(seen: list[Chunk]) -> str:
    return "".join(c.content for c in seen)


def assemble(deltas: list[ToolCallDelta]) -> list[dict[str, Any]]:
    calls: dict[int, dict[str, Any]] = {}
    for d in deltas:
        call = calls.setdefault(d.index, {"id": None, "type": "function", "function": {}})
        call["id"] = call["id"] or d.id
        function = call["function"]
        function["name"] = function.get("name") or d.name
        function["arguments"] = function.get("arguments", "") + d.arguments
    return [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize("scenario", ["reasoning", "reasoning_content"])
async def test_reasoning_arrives_under_either_field_name(
    up: UpstreamDouble, client_for: MakeClient, scenario: str
) -> None:
    seen = await chunks(await client_for(up), f"double/{scenario}")
    assert "".join(c.reasoning for c in seen) == REASONING_TEXT
    assert text(seen) == NORMAL_TEXT
    first_text = next(i for i, c in enumerate(seen) if c.content)
    assert all(c.reasoning for c in seen[:first_text])
    details = [d for c in seen for d in c.reasoning_details or []]
    if scenario == "reasoning":
        assert {(d["type"], d["format"]) for d in details} == {
            ("reasoning.text", "anthropic-claude-v1")
        }
        assert "".join(d["text"] for d in details) == REASONING_TEXT
    else:
        assert details == []


async def test_encrypted_reasoning_details_pass_through_unchanged(
    up: UpstreamDouble, client_for: MakeClient
) -> None:
    seen = await chunks(await client_for(up), "double/reasoning_encrypted")
    assert [d for c in seen for d in c.reasoning_details or []] == [ENCRYPTED_DETAIL]
    assert "".join(c.reasoning for c in seen) == ""
    assert text(seen) == NORMAL_TEXT


async def test_parallel_tool_calls_stream_in_interleaved_pieces(
    up: UpstreamDouble, client_for: MakeClient
) -> None:
    seen = await chunks(await client_for(up), "double/tool_calls_parallel")
    deltas = [d for c in seen for d in c.tool_calls or []]
    assert [d.index for d in deltas] == [0, 1, 0, 1, 0, 1, 0]
    assert [(d.id, d.name) for d in deltas[:2]] == [
        ("call_weather_1", "get_weather"),
        ("call_time_2", "get_time"),
    ]
    assert all(d.id is None and d.name is None for d in deltas[2:])
    assert assemble(deltas) == PARALLEL_TOOL_CALLS
    assert [c.finish_reason for c in seen if c.finish_reason] == ["tool_calls"]
    assert text(seen) == ""


async def test_error_null_chunks_are_normal_chunks(
    up: UpstreamDouble, client_for: MakeClient
) -> None:
    seen = await chunks(await client_for(up), "double/error_null")
    assert all(c.raw["error"] is None for c in seen)
    assert text(seen) == NORMAL_TEXT


async def test_usage_details_and_generation_metadata(
    up: UpstreamDouble, client_for: MakeClient
) -> None:
    seen = await chunks(await client_for(up), "double/usage_details")
    assert seen[-1].usage == DETAILED_USAGE
    finish = next(c for c in seen if c.finish_reason)
    assert (finish.finish_reason, finish.native_finish_reason) == ("stop", "stop")
    assert {c.generation_id for c in seen} == {"gen-1-double"}
    assert {c.provider for c in seen} == {"Double"}
    assert {c.model for c in seen} == {"double/usage_details"}


async def test_an_in_stream_429_with_a_string_code_is_retried(
    up: UpstreamDouble, client_for: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    observer = Observer()
    with caplog.at_level(logging.WARNING, "services.upstream.client"):
        seen = await chunks(await client_for(up, observer), "double/stream_429_then_ok")
    assert text(seen) == NORMAL_TEXT
    assert {c.generation_id for c in seen} == {"gen-2-double"}  # nothing of the first try
    assert len(up.requests) == 2
    assert observer.retries == ["stream_429"]
    assert STREAM_429["message"] in caplog.text


async def test_an_in_stream_429_that_persists_is_rate_limited(
    up: UpstreamDouble, client_for: MakeClient
) -> None:
    client = await client_for(up, max_retries=1)
    with pytest.raises(UpstreamError) as info:
        await chunks(client, "double/stream_429")
    err = info.value
    assert (err.kind, err.status, len(up.requests)) == (UpstreamFailure.RATE_LIMITED, 429, 2)
    assert err.retry_after is not None
    assert err.message == TEXT[UpstreamFailure.RATE_LIMITED]


async def test_an_in_stream_error_after_text_is_not_retried(
    up: UpstreamDouble, client_for: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Chunk] = []
    client = await client_for(up)
    with (
        caplog.at_level(logging.WARNING, "services.upstream.client"),
        pytest.raises(UpstreamError) as info,
    ):
        await collect_into(client, "double/mid_stream_error", seen)
    assert info.value.kind is UpstreamFailure.STREAM
    assert info.value.message == TEXT[UpstreamFailure.STREAM]
    assert "Provider returned error" in caplog.text
    assert text(seen) == "Partial answer before "
    assert len(up.requests) == 1


async def test_a_gateway_traceback_never_reaches_the_message(
    up: UpstreamDouble, client_for: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, "services.upstream.client"),
        pytest.raises(UpstreamError) as info,
    ):
        await chunks(await client_for(up), "double/traceback")
    assert info.value.message == TEXT[UpstreamFailure.BAD_REQUEST]
    assert "Traceback" in caplog.text
    assert "\n" not in caplog.records[-1].getMessage()  # one log line


async def test_a_slow_thinker_outlasts_the_first_token_timeout(
    up: UpstreamDouble, client_for: MakeClient
) -> None:
    client = await client_for(up, first_token_timeout_s=3, idle_timeout_s=3)
    began = time.monotonic()
    seen = await chunks(client, "double/slow_thinker")
    assert time.monotonic() - began >= 5.5
    assert text(seen) == NORMAL_TEXT
    assert "".join(c.reasoning for c in seen).startswith("thought0 thought1 ")


async def test_reasoning_ends_the_first_token_wait_but_the_idle_limit_still_holds(
    up: UpstreamDouble, client_for: MakeClient
) -> None:
    client = await client_for(up, first_token_timeout_s=0.3, idle_timeout_s=0.3)
    with pytest.raises(UpstreamError) as info:
        await chunks(client, "double/slow_thinker")  # deltas 0.5 s apart
    assert info.value.kind is UpstreamFailure.TIMEOUT


# -- dialects ------------------------------------------------------------------------


async def test_openrouter_dialect_asks_for_usage_both_ways(
    up: UpstreamDouble, client_for: MakeClient
) -> None:
    seen = await chunks(await client_for(up), "double/normal", provider={"order": ["x"]})
    body = up.requests[0].body
    assert body["stream"] is True
    assert body["usage"] == {"include": True}
    assert body["stream_options"] == {"include_usage": True}
    assert body["provider"] == {"order": ["x"]}
    assert seen[-1].usage is not None


async def test_openai_dialect_sends_only_standard_fields_and_gets_usage() -> None:
    async with UpstreamDouble(dialect="openai") as strict:
        client = UpstreamClient(
            UpstreamSettings(strict.base_url, KEY, "", "", dialect=Dialect.OPENAI)
        )
        async with client:
            assert client.dialect is Dialect.OPENAI
            body = {
                "model": "double/reasoning_content",
                "messages": MESSAGES,
                "top_k": 40,
                "models": ["a/b"],
                "provider": {"order": ["x"]},
                "transforms": ["middle-out"],
                "plugins": [{"id": "web"}],
            }
            seen = [c async for batch in client.stream(body) for c in batch]
        sent = strict.requests[0].body
    assert strict.requests[0].status == 200
    assert sent["stream_options"] == {"include_usage": True}
    assert not {"usage", "models", "provider", "transforms", "plugins"} & set(sent)
    assert sent["top_k"] == 40
    assert seen[-1].usage is not None
    assert "".join(c.reasoning for c in seen) == REASONING_TEXT


async def test_the_strict_double_refuses_openrouter_fields_and_withholds_usage() -> None:
    async with UpstreamDouble(dialect="openai") as strict:
        openrouter = UpstreamClient(UpstreamSettings(strict.base_url, KEY, "", "", max_retries=0))
        async with openrouter:
            with pytest.raises(UpstreamError) as info:
                await chunks(openrouter, "double/normal")
        assert (info.value.kind, strict.requests[0].status) == (UpstreamFailure.BAD_REQUEST, 400)
        async with aiohttp.ClientSession() as session:
            body = {"model": "m", "messages": MESSAGES, "stream": True}
            async with session.post(f"{strict.base_url}/chat/completions", json=body) as resp:
                raw = await resp.read()
    assert b'"usage"' not in raw
    assert raw.endswith(b"data: [DONE]\n\n")


# -- connections ---------------------------------------------------------------------


async def test_sequential_streams_reuse_one_connection(
    up: UpstreamDouble, client_for: MakeClient
) -> None:
    client = await client_for(up)
    for scenario in ("done_linger", "reasoning", "tool_calls_parallel", "error_null"):
        assert await chunks(client, f"double/{scenario}")
        assert up.requests[-1].completed
    assert await chunks(client, "double/done_linger")
    assert (len(up.requests), up.connections) == (5, 1)


async def test_a_stream_stopped_early_drops_its_connection(
    up: UpstreamDouble, client_for: MakeClient
) -> None:
    client = await client_for(up)
    stream = client.stream({"model": "double/slow", "messages": MESSAGES})
    assert (await anext(stream))[0].content
    await stream.aclose()
    rec = up.requests[0]
    assert await up.wait_closed(rec) < 1.0
    assert rec.closed_by_client
    assert await chunks(client, "double/normal")
    assert up.connections == 2


async def test_list_models_through_the_client(up: UpstreamDouble, client_for: MakeClient) -> None:
    client = await client_for(up)
    ids = [m.id for m in await client.list_models()]
    assert "double/reasoning" in ids
    assert "openrouter/auto" in ids
    assert up.requests == []
    up.models_status = 503
    with pytest.raises(ModelListError):
        await client.list_models()


async def test_a_client_that_is_not_started_refuses_politely(up: UpstreamDouble) -> None:
    client = UpstreamClient(UpstreamSettings(up.base_url, KEY, "", ""))
    with pytest.raises(UpstreamError) as info:
        await chunks(client, "double/normal")
    assert info.value.kind is UpstreamFailure.UNAVAILABLE
    await client.aclose()  # closing a client that never started is fine
