"""OpenTelemetry spans around upstream calls (off unless ``TRACING=true``).

``TracedUpstream`` wraps any ``Upstream`` with one CLIENT span per completion
(GenAI semantic conventions: ``chat <model>``): the requested and answering model, the
finish reason, token usage, the time to the first token (an event), and on failure the
error kind and HTTP status.  ``request_id`` and ``user_id`` come from the log context the
generation bound.  Spans go to the global tracer provider: install ``opentelemetry-sdk``
and an exporter and configure them (e.g. run under ``opentelemetry-instrument``); with
the API alone the spans are no-ops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from services import log_context
from services.upstream.base import Chunk, Dialect, ModelInfo, Upstream, UpstreamError

TRACER_NAME = "llm-relay"


class TracedUpstream:
    """``inner`` with spans; ``server_address`` names the upstream host in them."""

    def __init__(
        self, inner: Upstream, *, server_address: str, tracer: trace.Tracer | None = None
    ) -> None:
        self._inner = inner
        self._tracer = tracer or trace.get_tracer(TRACER_NAME)
        self._server = server_address

    @property
    def configured(self) -> bool:
        return self._inner.configured

    @property
    def dialect(self) -> Dialect:
        return self._inner.dialect

    async def list_models(self) -> list[ModelInfo]:
        return await self._inner.list_models()

    async def start(self) -> None:
        await self._inner.start()

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def stream(
        self, body: dict[str, Any], *, gather_s: float = 0.0, busy_gather_s: float = 0.0
    ) -> AsyncGenerator[list[Chunk], None]:
        model = str(body.get("model", ""))
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "server.address": self._server,
        }
        for key, value in log_context.current():
            attributes[f"llm_relay.{key}"] = value
        span = self._tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes)
        first = True
        finish: str | None = None
        try:
            async with aclosing(
                self._inner.stream(body, gather_s=gather_s, busy_gather_s=busy_gather_s)
            ) as batches:
                async for batch in batches:
                    if first:
                        span.add_event("first_chunk")
                        first = False
                    for chunk in batch:
                        if chunk.model:
                            span.set_attribute("gen_ai.response.model", chunk.model)
                        if chunk.finish_reason:
                            finish = chunk.finish_reason
                        if chunk.usage:
                            _usage(span, chunk.usage)
                    yield batch
        except UpstreamError as exc:
            span.set_attribute("error.type", exc.kind.value)
            if exc.status is not None:
                span.set_attribute("http.response.status_code", exc.status)
            span.set_status(Status(StatusCode.ERROR, exc.kind.value))
            raise
        except (asyncio.CancelledError, GeneratorExit):
            span.set_attribute("llm_relay.cancelled", True)
            raise
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            if finish is not None:
                span.set_attribute("gen_ai.response.finish_reasons", [finish])
            span.end()


def _usage(span: trace.Span, usage: dict[str, Any]) -> None:
    for ours, theirs in (
        ("gen_ai.usage.input_tokens", "prompt_tokens"),
        ("gen_ai.usage.output_tokens", "completion_tokens"),
    ):
        value = usage.get(theirs)
        if isinstance(value, int):
            span.set_attribute(ours, value)
