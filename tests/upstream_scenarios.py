"""Scenarios for the upstream double, and OpenRouter's streaming wire format.

A :class:`Scenario` describes one upstream behaviour; ``SCENARIOS`` names the standard
ones. A request selects one with ``"model": "double/<name>"``; otherwise the double's
default applies. Texts below are part of the double's contract: tests assert on them.
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
    fail_times: int | None = None  # with status: only the first N requests fail, then stream
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

    def _base(self) -> dict[str, Any]:
        return {
            "id": self.gen_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "provider": self.provider,
        }

    def content(self, text: str, finish_reason: str | None = None) -> dict[str, Any]:
        choice = {
            "index": 0,
            "delta": {"role": "assistant", "content": text},
            "finish_reason": finish_reason,
            "native_finish_reason": finish_reason,
        }
        return {**self._base(), "choices": [choice]}

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
