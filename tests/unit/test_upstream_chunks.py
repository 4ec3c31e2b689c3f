"""services/upstream/chunks.py: one data payload → a Chunk, or the reason it is not one."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.upstream.base import ToolCallDelta
from services.upstream.chunks import MalformedChunk, StreamErrorChunk, parse_chunk


def payload(delta: dict[str, Any] | None = None, **top: Any) -> bytes:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": None}
    return orjson.dumps({"id": "gen-9", "choices": [choice], **top})


def test_a_plain_content_chunk() -> None:
    chunk = parse_chunk(payload({"content": "hi"}, model="m/x", provider="P"))
    assert (chunk.content, chunk.model, chunk.provider, chunk.generation_id) == (
        "hi",
        "m/x",
        "P",
        "gen-9",
    )
    assert (chunk.reasoning, chunk.reasoning_details, chunk.tool_calls) == ("", None, None)
    assert chunk.raw["choices"][0]["delta"] == {"content": "hi"}


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        ({"reasoning": "a"}, "a"),
        ({"reasoning_content": "b"}, "b"),
        ({"reasoning": None, "reasoning_content": "c"}, "c"),
        ({"reasoning": "", "reasoning_content": "d"}, "d"),
        ({"reasoning": "e", "reasoning_content": "f"}, "e"),
        ({"reasoning": 3}, ""),
    ],
)
def test_reasoning_under_either_name(delta: dict[str, Any], expected: str) -> None:
    assert parse_chunk(payload(delta)).reasoning == expected


def test_reasoning_details_keep_their_objects_and_drop_junk() -> None:
    detail = {"type": "reasoning.encrypted", "data": "xyz", "index": 0}
    chunk = parse_chunk(payload({"reasoning_details": [detail, "junk", 3]}))
    assert chunk.reasoning_details == [detail]
    assert parse_chunk(payload({"reasoning_details": []})).reasoning_details is None
    assert parse_chunk(payload({"reasoning_details": "x"})).reasoning_details is None


def test_tool_call_pieces() -> None:
    pieces = [
        {
            "index": 1,
            "id": "call_b",
            "type": "function",
            "function": {"name": "f", "arguments": ""},
        },
        {"index": 0, "function": {"arguments": '{"a"'}},
        {"function": {"arguments": ": 1}"}},  # no index: its position
        "junk",
        {"index": -1, "id": "", "function": {"name": "", "arguments": None}},
    ]
    assert parse_chunk(payload({"tool_calls": pieces})).tool_calls == [
        ToolCallDelta(1, "call_b", "f", ""),
        ToolCallDelta(0, None, None, '{"a"'),
        ToolCallDelta(2, None, None, ": 1}"),
        ToolCallDelta(4, None, None, ""),
    ]
    assert parse_chunk(payload({"tool_calls": None})).tool_calls is None


def test_only_the_first_choice_counts() -> None:
    two = {
        "choices": [
            {"index": 0, "delta": {"content": "first"}, "finish_reason": None},
            {"index": 1, "delta": {"content": "second"}, "finish_reason": "stop"},
        ]
    }
    chunk = parse_chunk(orjson.dumps(two))
    assert (chunk.content, chunk.finish_reason) == ("first", None)


def test_finish_reasons_and_usage() -> None:
    usage = {"prompt_tokens": 1, "prompt_tokens_details": {"cached_tokens": 1}}
    raw = {
        "choices": [
            {"index": 0, "delta": {}, "finish_reason": "stop", "native_finish_reason": "STOP"}
        ],
        "usage": usage,
    }
    chunk = parse_chunk(orjson.dumps(raw))
    assert (chunk.finish_reason, chunk.native_finish_reason, chunk.usage) == ("stop", "STOP", usage)
    assert parse_chunk(orjson.dumps({"choices": [], "usage": None})).usage is None


def test_error_null_is_a_normal_chunk() -> None:
    assert parse_chunk(payload({"content": "ok"}, error=None)).content == "ok"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ({"code": 429, "message": "slow"}, 429),
        ({"code": "503", "message": "down"}, 503),
        ({"code": " 502 ", "message": "bad"}, 502),
        ({"code": "server_error", "message": "x"}, None),
        ({"code": True, "message": "x"}, None),
        ({"code": 42, "message": "x"}, None),
        ({"message": "x"}, None),
        ("a bare string", None),
    ],
)
def test_an_error_object_raises_with_its_status(error: Any, status: int | None) -> None:
    with pytest.raises(StreamErrorChunk) as info:
        parse_chunk(payload({"content": ""}, error=error))
    assert info.value.status == status


def test_a_vllm_style_error_object_is_an_error() -> None:
    raw = {"object": "error", "message": "too long", "type": "BadRequestError", "code": 400}
    with pytest.raises(StreamErrorChunk) as info:
        parse_chunk(orjson.dumps(raw))
    assert (info.value.status, info.value.detail) == (400, "too long")


def test_finish_reason_error_alone_is_an_error() -> None:
    raw = {"choices": [{"index": 0, "delta": {}, "finish_reason": "error"}]}
    with pytest.raises(StreamErrorChunk) as info:
        parse_chunk(orjson.dumps(raw))
    assert (info.value.status, info.value.detail) == (None, None)


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b'"text"', b"null"])
def test_malformed(data: bytes) -> None:
    with pytest.raises(MalformedChunk):
        parse_chunk(data)


def test_odd_shapes_are_empty_chunks() -> None:
    for raw in ({"choices": {"0": 1}}, {"choices": ["x"]}, {"choices": [{"delta": "x"}]}, {}):
        chunk = parse_chunk(orjson.dumps(raw))
        assert (chunk.content, chunk.finish_reason, chunk.tool_calls) == ("", None, None)
