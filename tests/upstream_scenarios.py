"""Scenarios for the upstream double, and OpenRouter's streaming wire format.

A :class:`Scenario` describes one upstream behaviour; ``SCENARIOS`` names the standard
ones. A request selects one with ``"model": "double/<name>"``; otherwise the double's
default applies. Texts below are part of the double's contract: tests assert on them.

What a stream sends, in order: an in-stream ``stream_error`` (then the body ends), or
``reasoning`` deltas, ``reasoning_details`` chunks, the answer tokens, ``tool_calls`` pieces,
the finish chunk, the usage chunk, ``[DONE]``.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

End = Literal["done", "no_done", "eof", "error", "truncated", "malformed", "stall"]

NORMAL_TEXT = "Hello, world! This is a streamed answer from the upstream double."
UTF8_TEXT = "héllo wörld 你好 🎉 ça marche — naïve café ✓"
PARTIAL_TEXT = "Partial answer before the stream broke."
PARTIAL_SENT = "Partial answer before "  # what the failing scenarios send (cut_after=3)
SLOW_TEXT = " ".join(f"token{i}" for i in range(1, 51))  # 50 tokens
COMMENT = ": OPENROUTER PROCESSING\n\n"
# A reply that tries to run script in a page that renders it (browser tests).
XSS_TEXT = (
    'Look: <img src=x onerror="window.__xss=1"> and <script>window.__xss=2</script> '
    "and [click me](javascript:window.__xss=3) and "
    '<a href="javascript:window.__xss=4">html link</a> and <iframe src="about:blank"></iframe> '
    "but **bold** and [a safe link](https://example.com/docs) are fine."
)
MARKDOWN_TEXT = """Here is how an answer reaches you, step by step:

1. The page emits `chat` with your message.
2. The server relays each upstream delta as a **`token`** event.
3. A final `done` carries the usage.

```python
async for batch in upstream.stream(body):
    await sink.emit("token", batch)
```

| event | carries |
|---|---|
| `token` | `request_id`, `seq`, `content` |
| `done` | `finish_reason`, `usage` |

> Press **Stop** at any time to cancel the answer."""

REASONING_TEXT = "The user greets me. I should greet back, briefly and kindly."
SLOW_THINKER_S = 6.0  # slow_thinker: reasoning deltas over this long before the answer
ENCRYPTED_DETAIL = {
    "type": "reasoning.encrypted",
    "data": "gAAAAABoISQ-encrypted-reasoning-blob==",
    "id": "rs_double_1",
    "format": "openai-responses-v1",
    "index": 0,
}
# Two tool calls streamed in pieces, their indexes interleaved (as OpenAI and OpenRouter do).
PARALLEL_TOOL_PIECES: list[dict[str, Any]] = [
    {"index": 0, "id": "call_weather_1", "type": "function",
     "function": {"name": "get_weather", "arguments": ""}},
    {"index": 1, "id": "call_time_2", "type": "function",
     "function": {"name": "get_time", "arguments": ""}},
    {"index": 0, "function": {"arguments": '{"locat'}},
    {"index": 1, "function": {"arguments": '{"timez'}},
    {"index": 0, "function": {"arguments": 'ion": "Par'}},
    {"index": 1, "function": {"arguments": 'one": "Europe/Paris"}'}},
    {"index": 0, "function": {"arguments": 'is, FR"}'}},
]  # fmt: skip
# What the pieces above assemble to (``done.tool_calls``).
PARALLEL_TOOL_CALLS: list[dict[str, Any]] = [
    {"id": "call_weather_1", "type": "function",
     "function": {"name": "get_weather", "arguments": '{"location": "Paris, FR"}'}},
    {"id": "call_time_2", "type": "function",
     "function": {"name": "get_time", "arguments": '{"timezone": "Europe/Paris"}'}},
]  # fmt: skip
DETAILED_USAGE = {
    "prompt_tokens": 194,
    "completion_tokens": 12,
    "total_tokens": 206,
    "cost": 0.00095,
    "cost_details": {"upstream_inference_cost": 0.0009},
    "prompt_tokens_details": {"cached_tokens": 128, "cache_write_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 7},
}
STREAM_429 = {"code": "429", "message": "Rate limit exceeded: free-models-per-min"}
TRACEBACK_MESSAGE = (
    "litellm.BadRequestError: OpenAIException - Traceback (most recent call last):\n"
    '  File "/usr/lib/python3.12/site-packages/litellm/main.py", line 1, in completion\n'
    "KeyError: 'sk-secret-of-the-gateway'"
)
# Fields a strict OpenAI-compatible server accepts (the openai-dialect double refuses others):
# OpenAI's own, plus the sampling extras vLLM and LiteLLM take.  OpenRouter's own fields
# (models, provider, transforms, plugins, usage) are not among them.
OPENAI_FIELDS = frozenset(
    {
        "model", "messages", "stream", "stream_options", "temperature", "top_p", "n", "stop",
        "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty",
        "logit_bias", "logprobs", "top_logprobs", "user", "seed", "tools", "tool_choice",
        "parallel_tool_calls", "response_format", "reasoning_effort", "reasoning", "top_k",
        "min_p", "top_a", "repetition_penalty",
    }
)  # fmt: skip

_WORD = re.compile(r"\s*\S+\s*")


def split_tokens(text: str) -> list[str]:
    """One token per word with its trailing whitespace; ``"".join(result) == text``."""
    tokens = _WORD.findall(text)
    return tokens if tokens or not text else [text]


@dataclass
class Scenario:
    """One upstream behaviour. Defaults give a normal, complete stream."""

    name: str = "normal"
    text: str = NORMAL_TEXT
    tokens: list[str] | None = None  # explicit tokens; default: split_tokens(text)
    delay_s: float = 0.0  # pause between tokens
    first_token_delay_s: float = 0.0  # after headers, before the first token (inf: stall)
    hang_s: float = 0.0  # before sending any headers (inf: until the client goes away)
    status: int = 200  # != 200: answer with an OpenRouter error body instead of a stream
    error_message: str | None = None  # default: ERROR_MESSAGES[status]
    error_metadata: dict[str, Any] | None = None
    retry_after: str | None = None  # Retry-After header on error responses
    fail_times: int | None = None  # with status/stream_error: only the first N requests fail
    stream_error: dict[str, Any] | None = None  # an in-stream error object, before any delta
    reasoning: list[str] | None = None  # reasoning deltas, before the answer
    reasoning_field: Literal["reasoning", "reasoning_content"] = "reasoning"
    reasoning_delay_s: float = 0.0  # pause between reasoning deltas
    reasoning_format: str | None = None  # set: each reasoning delta carries a reasoning.text detail
    reasoning_details: list[dict[str, Any]] | None = None  # one chunk each, after the reasoning
    tool_calls: list[dict[str, Any]] | None = None  # delta.tool_calls pieces, one chunk each
    null_error: bool = False  # every chunk carries "error": null
    linger_s: float = 0.0  # after [DONE], before the body ends (as proxies do)
    comments: bool = False  # ": OPENROUTER PROCESSING" before and between chunks
    crlf: bool = False  # CRLF line ends
    split_bytes: bool = False  # write each event in pieces cut inside UTF-8 chars and "data:"
    end: End = "done"
    cut_after: int | None = None  # for failing ends: tokens sent before the failure
    finish_reason: str = "stop"
    usage: dict[str, Any] | None = None  # replaces the computed usage
    include_usage: bool = True
    model: str | None = None  # model in chunks; default: the requested model
    provider: str = "Double"
    echo: bool = False  # text = "echo: <last user message>"
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, for custom doubles

    def token_list(self, text: str | None = None) -> list[str]:
        if self.tokens is not None and text is None:
            return list(self.tokens)
        return split_tokens(self.text if text is None else text)

    def tokens_to_send(self, text: str | None = None) -> list[str]:
        tokens = self.token_list(text)
        if self.end in ("done", "no_done") or self.cut_after is None:
            return tokens
        return tokens[: self.cut_after]


ERROR_MESSAGES: dict[int, str] = {
    400: "double/http_400 is not a valid model ID",
    401: "No auth credentials found",
    402: "Insufficient credits. Add more using https://openrouter.ai/credits",
    403: "Input was flagged by moderation",
    408: "Request timed out",
    429: "Rate limit exceeded",
    502: "Provider returned error",
    503: "No available model provider that meets your routing requirements",
}

_META_403 = {"reasons": ["harassment"], "flagged_input": "...", "provider_name": "Double"}
_META_502 = {"provider_name": "Double", "raw": "upstream connect error"}


def _http(status: int, **kw: Any) -> Scenario:
    return Scenario(name=f"http_{status}", status=status, **kw)


def _partial(name: str, end: End, **kw: Any) -> Scenario:
    return Scenario(name=name, text=PARTIAL_TEXT, end=end, cut_after=3, **kw)


_ALL = [
    Scenario(),
    Scenario(
        name="reasoning",
        reasoning=split_tokens(REASONING_TEXT),
        reasoning_format="anthropic-claude-v1",
    ),
    Scenario(
        name="reasoning_content",
        reasoning=split_tokens(REASONING_TEXT),
        reasoning_field="reasoning_content",
    ),
    Scenario(name="reasoning_encrypted", reasoning_details=[ENCRYPTED_DETAIL]),
    Scenario(
        name="slow_thinker",
        reasoning=[f"thought{i} " for i in range(12)],
        reasoning_delay_s=SLOW_THINKER_S / 12,
    ),
    Scenario(
        name="tool_calls_parallel",
        text="",
        tool_calls=PARALLEL_TOOL_PIECES,
        finish_reason="tool_calls",
    ),
    Scenario(name="error_null", null_error=True),
    Scenario(name="done_linger", linger_s=0.2),
    Scenario(name="stream_429_then_ok", stream_error=STREAM_429, fail_times=1),
    Scenario(name="stream_429", stream_error=STREAM_429),
    Scenario(
        name="usage_details",
        reasoning=split_tokens(REASONING_TEXT),
        usage=DETAILED_USAGE,
    ),
    Scenario(name="traceback", status=400, error_message=TRACEBACK_MESSAGE),
    Scenario(name="comments", comments=True),
    Scenario(name="split_utf8", text=UTF8_TEXT, split_bytes=True),
    Scenario(name="crlf", crlf=True),
    Scenario(name="crlf_split", text=UTF8_TEXT, crlf=True, split_bytes=True),
    Scenario(name="no_done", end="no_done"),
    Scenario(name="length", finish_reason="length"),
    Scenario(name="echo", echo=True),
    Scenario(name="slow", text=SLOW_TEXT, delay_s=0.2),
    Scenario(name="xss", text=XSS_TEXT),
    Scenario(name="markdown", text=MARKDOWN_TEXT, delay_s=0.06),
    Scenario(name="hang", hang_s=math.inf),
    Scenario(name="stall_first_token", first_token_delay_s=math.inf),
    _partial("eof_no_finish", "eof"),
    _partial("mid_stream_error", "error"),
    _partial("truncated", "truncated"),
    _partial("malformed", "malformed"),
    _partial("stall_mid_stream", "stall"),
    _http(400),
    _http(401),
    _http(402),
    _http(403, error_metadata=_META_403),
    _http(408),
    _http(429, retry_after="1"),
    Scenario(name="http_429_no_retry_after", status=429),
    Scenario(name="http_429_then_ok", status=429, retry_after="0", fail_times=1),
    _http(502, error_metadata=_META_502),
    _http(503),
    Scenario(name="http_503_then_ok", status=503, fail_times=1),
]
SCENARIOS: dict[str, Scenario] = {s.name: s for s in _ALL}


# --- wire format --------------------------------------------------------------------


def sse(obj: dict[str, Any] | str) -> str:
    """One SSE event; UTF-8 is kept as is (not \\u-escaped), as OpenRouter does."""
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {data}\n\n"


@dataclass
class ChunkFactory:
    """Builds the chunks of one generation (shared id, created, model, provider)."""

    gen_id: str
    model: str
    provider: str
    created: int = field(default_factory=lambda: int(time.time()))
    null_error: bool = False  # every chunk carries "error": null
    linger_s: float = 0.0  # after [DONE], before the body ends (as proxies do)

    def _base(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "id": self.gen_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "provider": self.provider,
        }
        if self.null_error:
            base["error"] = None
        return base

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {
            "index": 0,
            "delta": {"role": "assistant", **delta},
            "finish_reason": finish_reason,
            "native_finish_reason": finish_reason,
        }
        return {**self._base(), "choices": [choice]}

    def content(self, text: str, finish_reason: str | None = None) -> dict[str, Any]:
        return self.delta({"content": text}, finish_reason)

    def reasoning(self, text: str, field: str, detail_format: str | None) -> dict[str, Any]:
        delta: dict[str, Any] = {"content": "", field: text}
        if detail_format is not None:
            detail = {"type": "reasoning.text", "text": text, "index": 0, "format": detail_format}
            delta["reasoning_details"] = [detail]
        return self.delta(delta)

    def stream_error(self, error: dict[str, Any]) -> dict[str, Any]:
        choice = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
        return {**self._base(), "error": error, "choices": [choice]}

    def error(self, code: int = 502, message: str = "Provider returned error") -> dict[str, Any]:
        choice = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
        return {**self._base(), "error": {"code": code, "message": message}, "choices": [choice]}

    def usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        return {**self._base(), "choices": [], "usage": usage}

    def completion(self, text: str, finish_reason: str, usage: dict[str, Any]) -> dict[str, Any]:
        """The non-streaming ``chat.completion`` body."""
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": finish_reason}
        base = {**self._base(), "object": "chat.completion"}
        return {**base, "choices": [choice], "usage": usage}


def make_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    total = prompt_tokens + completion_tokens
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total,
        "cost": round(total * 0.000001, 8),
    }


def message_text(content: Any) -> str:
    """Text of a message's ``content`` (a string or a list of ``{"type": "text"}`` parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "".join(p for p in parts if isinstance(p, str))
    return ""


def last_user_text(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return message_text(msg.get("content"))
    return ""


def prompt_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    texts = [message_text(m.get("content")) for m in messages if isinstance(m, dict)]
    return sum(len(t.split()) for t in texts)


def split_points(data: bytes) -> list[bytes]:
    """Cut an encoded event inside ``data:`` and one byte into every multi-byte char."""
    cuts = {3} if len(data) > 3 else set()
    cuts.update(i + 1 for i, b in enumerate(data) if b >= 0xC0)  # lead byte of a sequence
    edges = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]
