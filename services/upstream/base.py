"""What the chat pipeline needs of an upstream, whichever it is (OpenRouter client, simulator).

``Upstream.stream`` yields the chunks of one completion, one list per network read (or per
coalescing window), and raises ``UpstreamError`` for every failure; retries happen inside,
only before anything was yielded.  ``Chunk`` is one parsed ``chat.completion.chunk``.

The body given to ``stream`` holds the request's fields as the client sent them plus
``model`` and ``user``; the upstream adds ``stream`` and the usage flags of its ``dialect``.
In the ``openai`` dialect the fields of ``OPENROUTER_ONLY_FIELDS`` are never sent (the
relay core refuses them first, with ``invalid_payload``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class Dialect(StrEnum):
    """``UPSTREAM_DIALECT``: which request fields the upstream understands."""

    OPENROUTER = "openrouter"  # OpenRouter: its routing fields and usage: {include: true}
    OPENAI = "openai"  # a plain OpenAI-compatible server (vLLM, Ollama, LiteLLM)


# Request fields only OpenRouter knows: refused (and never sent) in the openai dialect.
OPENROUTER_ONLY_FIELDS = frozenset({"models", "provider", "transforms", "plugins", "usage"})


class UpstreamFailure(StrEnum):
    BAD_REQUEST = "bad_request"
    AUTH = "auth"
    PAYMENT = "payment"
    MODERATION = "moderation"
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    STREAM = "stream"


class UpstreamError(Exception):
    """An upstream failure; `message` is safe to show to an end user."""

    def __init__(
        self,
        kind: UpstreamFailure,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """One streamed piece of a tool call (``choices[0].delta.tool_calls[i]``)."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(slots=True)
class Chunk:
    content: str
    finish_reason: str | None
    model: str | None
    usage: dict[str, Any] | None
    raw: dict[str, Any]
    reasoning: str = ""  # delta.reasoning, or delta.reasoning_content (openai dialect)
    reasoning_details: list[dict[str, Any]] | None = None
    tool_calls: list[ToolCallDelta] | None = None
    native_finish_reason: str | None = None
    generation_id: str | None = None  # the response's "id"
    provider: str | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model a client may pick (``GET /models``)."""

    id: str
    name: str

    def to_wire(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name}


class ModelListError(Exception):
    """The upstream's model list could not be fetched or read."""


class Upstream(Protocol):
    """An OpenAI-compatible streaming completion source, opened and closed with the app."""

    @property
    def configured(self) -> bool:
        """Whether it can answer at all (an API key is set); readiness reports it."""
        ...

    @property
    def dialect(self) -> Dialect:
        """Which request fields it understands (``OPENROUTER_ONLY_FIELDS`` or not)."""
        ...

    async def list_models(self) -> list[ModelInfo]:
        """The models it serves (``GET /models``); raises ``ModelListError``."""
        ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    def stream(
        self, body: dict[str, Any], *, gather_s: float = 0.0, busy_gather_s: float = 0.0
    ) -> AsyncGenerator[list[Chunk], None]:
        """An async generator: close it (``contextlib.aclosing``) to stop the upstream at once.

        ``gather_s``: after the first progress, each read waits that long and yields what
        came meanwhile as one batch; ``busy_gather_s`` is the window of a stream that sends
        faster than that (several chunks a window), never shorter than ``gather_s``."""
        ...
