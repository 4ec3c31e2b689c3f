"""``TRACING=true``: one OpenTelemetry span per upstream call, with the GenAI attributes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.harness import Recorder, make_token, run_server

USER_MSG = [{"role": "user", "content": "Say hello"}]
_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The process-wide tracer provider (OpenTelemetry allows setting it once)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


async def test_spans_around_upstream_calls(
    spans: InMemorySpanExporter,
    settings_for: Callable[..., Any],
    recorders: Callable[[], Recorder],
) -> None:
    async with run_server(settings_for(tracing=True, upstream_max_retries=0)) as srv:
        rec = recorders()
        await rec.connect(srv.url, make_token("alice"))
        await rec.call("chat", {"request_id": "ok", "messages": USER_MSG})
        await rec.terminal("ok")
        slow = {"request_id": "slow", "messages": USER_MSG, "model": "double/slow"}
        await rec.call("chat", slow)
        await rec.wait_for(lambda e, d: e == "token" and d["request_id"] == "slow")
        await rec.call("cancel", {"request_id": "slow"})
        await rec.terminal("slow")
        bad = {"request_id": "bad", "messages": USER_MSG, "model": "double/http_502"}
        await rec.call("chat", bad)
        await rec.terminal("bad")

    by_id = {span.attributes["llm_relay.request_id"]: span for span in spans.get_finished_spans()}
    assert set(by_id) == {"ok", "slow", "bad"}
    ok = by_id["ok"]
    assert ok.name == "chat openrouter/auto"
    assert ok.kind is trace.SpanKind.CLIENT
    assert ok.attributes["llm_relay.user_id"] == "alice"
    assert ok.attributes["server.address"] == "127.0.0.1"
    assert ok.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert ok.attributes["gen_ai.usage.output_tokens"] > 0
    assert [event.name for event in ok.events] == ["first_chunk"]
    assert ok.status.status_code is StatusCode.UNSET
    assert by_id["slow"].attributes["llm_relay.cancelled"] is True
    failed = by_id["bad"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["http.response.status_code"] == 502
    assert failed.attributes["error.type"] == "unavailable"


async def test_no_spans_unless_turned_on(
    spans: InMemorySpanExporter,
    settings_for: Callable[..., Any],
    recorders: Callable[[], Recorder],
) -> None:
    async with run_server(settings_for()) as srv:
        rec = recorders()
        await rec.connect(srv.url, make_token("alice"))
        await rec.call("chat", {"request_id": "ok", "messages": USER_MSG})
        assert (await rec.terminal("ok"))[0] == "done"
    assert spans.get_finished_spans() == ()
