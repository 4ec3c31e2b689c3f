"""One SSE ``data`` payload of a chat-completions stream → a ``Chunk`` (no network code).

Only ``choices[0]`` is read (``n`` is never asked for).  The reasoning text is
``delta.reasoning`` (OpenRouter) or ``delta.reasoning_content`` (DeepSeek, vLLM, LiteLLM).
A chunk whose ``error`` is absent or ``null`` is a normal chunk; an ``error`` object, a
vLLM-style ``{"object": "error", ...}``, or ``finish_reason: "error"``, raises
``StreamErrorChunk`` with the upstream's code (a number or a numeric string, read as the
HTTP status it stands for) and its text, for the log only.
"""

from __future__ import annotations

from typing import Any

import orjson

from services.upstream.base import Chunk, ToolCallDelta

__all__ = ["MalformedChunk", "StreamErrorChunk", "parse_chunk"]


class MalformedChunk(Exception):
    """The payload is not a JSON object."""


class StreamErrorChunk(Exception):
    """The upstream reported an error inside the stream."""

    def __init__(self, status: int | None, detail: str | None) -> None:
        super().__init__(detail or "the model reported an error")
        self.status = status  # the error's code as an HTTP status, when it is one
        self.detail = detail  # upstream text: for the log, never for a client


def parse_chunk(payload: bytes) -> Chunk:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise MalformedChunk from None
    if not isinstance(obj, dict):
        raise MalformedChunk
    content = reasoning = ""
    finish = native = None
    details: list[dict[str, Any]] | None = None
    tool_calls: list[ToolCallDelta] | None = None
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            value = delta.get("content")
            if isinstance(value, str):
                content = value
            value = delta.get("reasoning") or delta.get("reasoning_content")
            if isinstance(value, str):
                reasoning = value
            if "reasoning_details" in delta:
                details = _objects(delta["reasoning_details"])
            if "tool_calls" in delta:
                tool_calls = _tool_calls(delta["tool_calls"])
        value = choice.get("finish_reason")
        if isinstance(value, str):
            finish = value
        value = choice.get("native_finish_reason")
        if isinstance(value, str):
            native = value
    error = obj.get("error")
    if error is None and not choices and obj.get("object") == "error":
        error = obj  # vLLM's in-stream error: {"object": "error", "message", "code"}
    if error is not None or finish == "error":
        raise _stream_error(error)
    model, usage, gen_id, provider = (
        obj.get("model"),
        obj.get("usage"),
        obj.get("id"),
        obj.get("provider"),
    )
    return Chunk(
        content=content,
        finish_reason=finish,
        model=model if isinstance(model, str) else None,
        usage=usage if isinstance(usage, dict) else None,
        raw=obj,
        reasoning=reasoning,
        reasoning_details=details,
        tool_calls=tool_calls,
        native_finish_reason=native,
        generation_id=gen_id if isinstance(gen_id, str) else None,
        provider=provider if isinstance(provider, str) else None,
    )


def _objects(value: Any) -> list[dict[str, Any]] | None:
    if not isinstance(value, list):
        return None
    return [item for item in value if isinstance(item, dict)] or None


def _tool_calls(value: Any) -> list[ToolCallDelta] | None:
    """``delta.tool_calls``: ``[{index, id?, type?, function: {name?, arguments?}}]``."""
    if not isinstance(value, list):
        return None
    out: list[ToolCallDelta] = []
    for position, item in enumerate(value):
        if not isinstance(item, dict):
            continue
        index = item.get("index")
        call_id = item.get("id")
        function = item.get("function")
        name = arguments = None
        if isinstance(function, dict):
            name, arguments = function.get("name"), function.get("arguments")
        out.append(
            ToolCallDelta(
                index=index if isinstance(index, int) and index >= 0 else position,
                id=call_id if isinstance(call_id, str) and call_id else None,
                name=name if isinstance(name, str) and name else None,
                arguments=arguments if isinstance(arguments, str) else "",
            )
        )
    return out or None


def _stream_error(error: Any) -> StreamErrorChunk:
    code: Any = None
    detail: Any = error
    if isinstance(error, dict):
        code, detail = error.get("code"), error.get("message")
    return StreamErrorChunk(_status(code), detail if isinstance(detail, str) else None)


def _status(code: Any) -> int | None:
    """A number, or a numeric string (LiteLLM, other gateways), in the HTTP status range."""
    if isinstance(code, bool):
        return None
    if isinstance(code, str) and code.strip().isdigit():
        code = int(code.strip())
    if isinstance(code, int) and 100 <= code <= 599:
        return code
    return None
