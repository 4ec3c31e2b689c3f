"""Local model simulator for demo mode: an ``Upstream`` with canned answers, in process.

It serves three models, each saying plainly that no real model is connected:

- ``local/simulator``: the answer text, streamed word by word;
- ``local/simulator-reasoning``: a short reasoning (``delta.reasoning`` with its
  ``reasoning_details``), then the answer;
- ``local/simulator-tools``: with ``tools`` in the request and no tool result yet, a call of
  the first tool (``get_weather`` when offered), its arguments streamed in pieces and
  ``finish_reason: "tool_calls"``; after a ``tool`` message, an answer that uses the result.

Every chunk is built as OpenRouter's wire format and read by the same parser as the real
client's (so ``?format=completion`` clients see real-looking chunks).  Other model names
are refused like an upstream 400.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import orjson

from services.upstream.base import Chunk, Dialect, ModelInfo, UpstreamError, UpstreamFailure
from services.upstream.chunks import parse_chunk
from services.upstream.failures import TEXT

SIMULATOR_MODEL = "local/simulator"
REASONING_MODEL = "local/simulator-reasoning"
TOOLS_MODEL = "local/simulator-tools"
SIMULATOR_MODELS = (
    ModelInfo(SIMULATOR_MODEL, "Local simulator (demo, no real model)"),
    ModelInfo(REASONING_MODEL, "Local simulator with reasoning (demo)"),
    ModelInfo(TOOLS_MODEL, "Local simulator with tool calls (demo)"),
)
SIMULATOR_MODEL_IDS = tuple(m.id for m in SIMULATOR_MODELS)
PROVIDER = "Local simulator"

_SNIPPET_CHARS = 200
_ARGUMENT_PIECE_CHARS = 8
_WORD = re.compile(r"\s*\S+\s*")
_PLACE = re.compile(r"\b(?:in|at|for)\s+([A-Z][\w.'-]*(?:[ ,]+[A-Z][\w.'-]*)*)")

_BODY = """

I'm the built-in demo model, so I don't really understand your message. \
I'm here to show how the relay works:

- the answer streams **word by word** over Socket.IO,
- markdown such as `inline code` and lists is rendered as it arrives,
- you can cancel a reply at any moment.

To talk to a real model, set `OPENROUTER_API_KEY` and start the server without `--demo`."""

_REASONING = (
    "The user wrote: “{said}”. I am the local simulator, so I cannot really think about it. "
    "What I can do is show how reasoning streams: these words arrive as `reasoning` events, "
    "before the answer, and a page may show them in a collapsible block."
)
_NO_TOOLS = (
    "(local simulator — no real model is connected) This model calls tools, but the request "
    "offered none. Send `tools` with a function such as `get_weather` and I will call it."
)
_TOOL_RESULT = (
    "(local simulator — no real model is connected) The tool `{name}` answered: “{result}”. "
    "A real model would now use that result to answer you."
)


def reply_text(user_text: str) -> str:
    """The simulator's answer to ``user_text``."""
    said = _snippet(user_text)
    opening = "(local simulator — no real model is connected) "
    opening += f"You said: “{said}”." if said else "You sent an empty message."
    return opening + _BODY


def reasoning_text(user_text: str) -> str:
    """The reasoning ``local/simulator-reasoning`` streams before its answer."""
    return _REASONING.format(said=_snippet(user_text) or "(nothing)")


def split_words(text: str) -> list[str]:
    """Word-sized tokens with their whitespace; ``"".join(result) == text``."""
    return _WORD.findall(text) or ([text] if text else [])


def place_in(text: str) -> str:
    """The place a weather question names (``"… in Lyon?"`` → ``"Lyon"``), else the text."""
    match = _PLACE.search(text)
    return match.group(1).strip(" ,") if match else _snippet(text) or "Paris"


def _snippet(text: str) -> str:
    said = " ".join(text.split())
    if len(said) > _SNIPPET_CHARS:
        said = said[: _SNIPPET_CHARS - 1].rstrip() + "…"
    return said


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for msg in reversed(messages):
        if msg.get("role") == "user":
            return _text(msg.get("content"))
    return ""


def _tool_names(body: dict[str, Any]) -> list[str]:
    tools = body.get("tools")
    names = []
    for tool in tools if isinstance(tools, list) else []:
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            names.append(name)
    return names


def _called_name(messages: list[dict[str, Any]], call_id: Any) -> str:
    for msg in messages:
        for call in msg.get("tool_calls") or []:
            if isinstance(call, dict) and call.get("id") == call_id:
                function = call.get("function")
                if isinstance(function, dict) and isinstance(function.get("name"), str):
                    return str(function["name"])
    return "tool"


class Simulator:
    """The demo ``Upstream``: no network, no key; see the module docstring."""

    def __init__(self, *, token_delay_s: float = 0.03) -> None:
        self._token_delay_s = token_delay_s
        self._ids = itertools.count(1)

    @property
    def configured(self) -> bool:
        return True

    @property
    def dialect(self) -> Dialect:
        return Dialect.OPENROUTER

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def list_models(self) -> list[ModelInfo]:
        return list(SIMULATOR_MODELS)

    async def stream(
        self, body: dict[str, Any], *, gather_s: float = 0.0, busy_gather_s: float = 0.0
    ) -> AsyncGenerator[list[Chunk], None]:
        model = body.get("model") or SIMULATOR_MODEL
        if model not in SIMULATOR_MODEL_IDS:
            kind = UpstreamFailure.BAD_REQUEST
            raise UpstreamError(kind, TEXT[kind], status=400)
        wire = _Wire(f"gen-sim-{next(self._ids)}", str(model))
        for i, raw in enumerate(self._script(wire, body)):
            if i and self._token_delay_s > 0:
                await asyncio.sleep(self._token_delay_s)
            yield [parse_chunk(orjson.dumps(raw))]

    def _script(self, wire: _Wire, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        messages = _messages(body)
        user_text = _last_user_text(messages)
        prompt = sum(len(_text(m.get("content")).split()) for m in messages)
        reasoning: list[str] = []
        if wire.model == REASONING_MODEL:
            reasoning = split_words(reasoning_text(user_text))
            for word in reasoning:
                detail = {"type": "reasoning.text", "text": word, "index": 0, "format": "unknown"}
                yield wire.delta({"reasoning": word, "reasoning_details": [detail]})
        if wire.model == TOOLS_MODEL:
            yield from self._tools(wire, body, messages, user_text, prompt)
            return
        words = split_words(reply_text(user_text))
        for word in words:
            yield wire.delta({"content": word})
        yield wire.finish("stop")
        yield wire.usage(prompt, len(words) + len(reasoning), len(reasoning))

    def _tools(
        self,
        wire: _Wire,
        body: dict[str, Any],
        messages: list[dict[str, Any]],
        user_text: str,
        prompt: int,
    ) -> Iterator[dict[str, Any]]:
        last = messages[-1] if messages else {}
        names = _tool_names(body)
        if last.get("role") == "tool":
            name = _called_name(messages, last.get("tool_call_id"))
            text = _TOOL_RESULT.format(name=name, result=_snippet(_text(last.get("content"))))
        elif names:
            name = "get_weather" if "get_weather" in names else names[0]
            arguments = orjson.dumps({"location": place_in(user_text)}).decode()
            pieces = [
                arguments[i : i + _ARGUMENT_PIECE_CHARS]
                for i in range(0, len(arguments), _ARGUMENT_PIECE_CHARS)
            ]
            call_id = f"call_{wire.gen_id.removeprefix('gen-')}"
            function = {"name": name, "arguments": ""}
            head = {"index": 0, "id": call_id, "type": "function", "function": function}
            yield wire.delta({"tool_calls": [head]})
            for piece in pieces:
                yield wire.delta({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            yield wire.finish("tool_calls")
            yield wire.usage(prompt, len(pieces) + 1, 0)
            return
        else:
            text = _NO_TOOLS
        words = split_words(text)
        for word in words:
            yield wire.delta({"content": word})
        yield wire.finish("stop")
        yield wire.usage(prompt, len(words), 0)


class _Wire:
    """The chunks of one simulated generation, in OpenRouter's shape."""

    def __init__(self, gen_id: str, model: str) -> None:
        self.gen_id = gen_id
        self.model = model
        self._base = {
            "id": gen_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "provider": PROVIDER,
        }

    def delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        choice = {"index": 0, "delta": {"role": "assistant", **delta}, "finish_reason": None}
        return {**self._base, "choices": [choice]}

    def finish(self, reason: str) -> dict[str, Any]:
        choice = {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "finish_reason": reason,
            "native_finish_reason": reason,
        }
        return {**self._base, "choices": [choice]}

    def usage(self, prompt: int, completion: int, reasoning: int) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cost": 0,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
        return {**self._base, "choices": [], "usage": usage}
