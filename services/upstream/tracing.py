"""OpenTelemetry spans around upstream calls (off unless ``TRACING=true``).

``TracedUpstreamClient`` is the upstream client with one CLIENT span per completion
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
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from services import log_context
from services.upstream.base import Chunk, UpstreamError
from services.upstream.client import UpstreamClient

TRACER_NAME = "llm-relay"


class TracedUpstreamClient(UpstreamClient):
    def __init__(self, *args: Any, tracer: trace.Tracer | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tracer = tracer or trace.get_tracer(TRACER_NAME)
        self._server = urlsplit(self._url).hostname or ""

    async def stream(
        self, body: dict[str, Any], *, gather_s: float = 0.0
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
            async for batch in super().stream(body, gather_s=gather_s):
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
