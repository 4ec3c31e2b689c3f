"""StreamState: a batch of upstream chunks as stream events, and what done reports."""

from __future__ import annotations

from typing import Any

from events.core.stream import StreamState
from services.upstream.base import Chunk, ToolCallDelta


def chunk(
    content: str = "",
    reasoning: str = "",
    calls: list[ToolCallDelta] | None = None,
    details: list[dict[str, Any]] | None = None,
    **kw: Any,
) -> Chunk:
    return Chunk(
        content=content,
        finish_reason=kw.pop("finish_reason", None),
        model=kw.pop("model", None),
        usage=kw.pop("usage", None),
        raw={},
        reasoning=reasoning,
        tool_calls=calls,
        reasoning_details=details,
        **kw,
    )


def test_kinds_are_never_mixed_and_keep_upstream_order() -> None:
    state = StreamState()
    events = state.absorb(
        [chunk(reasoning="Let me "), chunk(reasoning="think."), chunk("Hel"), chunk("lo")]
    )
    assert events == [("reasoning", {"content": "Let me think."}), ("token", {"content": "Hello"})]
    events = state.absorb([chunk("a"), chunk(reasoning="b"), chunk("c")])
    assert [e for e, _ in events] == ["token", "reasoning", "token"]
    assert state.tokens == 3


def test_one_chunk_with_reasoning_and_text_gives_two_events() -> None:
    events = StreamState().absorb([chunk("answer", reasoning="thought")])
    assert events == [("reasoning", {"content": "thought"}), ("token", {"content": "answer"})]


def test_tool_call_pieces_join_per_index_and_name_the_call_once() -> None:
    state = StreamState()
    events = state.absorb(
        [
            chunk(calls=[ToolCallDelta(0, "call_a", "f", "")]),
            chunk(calls=[ToolCallDelta(0, None, None, '{"x"')]),
            chunk(calls=[ToolCallDelta(1, "call_b", "g", "{")]),
            chunk(calls=[ToolCallDelta(0, None, None, ": 1}")]),
        ]
    )
    assert events == [
        ("tool_call", {"index": 0, "arguments": '{"x"', "id": "call_a", "name": "f"}),
        ("tool_call", {"index": 1, "arguments": "{", "id": "call_b", "name": "g"}),
        ("tool_call", {"index": 0, "arguments": ": 1}"}),
    ]
    # a provider that repeats the id on every piece: still named once
    events = state.absorb([chunk(calls=[ToolCallDelta(1, "call_b", "g", "}")])])
    assert events == [("tool_call", {"index": 1, "arguments": "}"})]
    done = state.done_fields("tool_calls")
    assert done["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]


def test_reasoning_details_merge_text_pieces_of_one_index() -> None:
    state = StreamState()
    text = {"type": "reasoning.text", "index": 0, "format": "anthropic-claude-v1"}
    state.absorb(
        [
            chunk(details=[{**text, "text": "a", "signature": None}]),
            chunk(details=[{**text, "text": "b", "signature": "sig"}]),
            chunk(details=[{"type": "reasoning.encrypted", "data": "x", "index": 0}]),
            chunk(details=[{**text, "text": "c", "index": 1}]),
            chunk(details=[{"type": "reasoning.summary", "summary": "s1", "index": 2}]),
            chunk(details=[{"type": "reasoning.summary", "summary": "s2", "index": 2}]),
        ]
    )
    assert state.done_fields("stop")["reasoning_details"] == [
        {**text, "text": "ab", "signature": "sig"},
        {"type": "reasoning.encrypted", "data": "x", "index": 0},
        {**text, "text": "c", "index": 1},
        {"type": "reasoning.summary", "summary": "s1s2", "index": 2},
    ]


def test_done_fields_and_usage() -> None:
    state = StreamState(model="m")
    assert state.done_fields("stop") == {
        "finish_reason": "stop",
        "model": "m",
        "usage": {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None},
        "last_seq": -1,
    }
    state.absorb(
        [
            chunk(
                "x",
                finish_reason="stop",
                native_finish_reason="end_turn",
                generation_id="gen-1",
                provider="Anthropic",
                model="anthropic/claude",
                usage={
                    "prompt_tokens": 3,
                    "completion_tokens": 2,
                    "total_tokens": 5,
                    "cost": 0.1,
                    "prompt_tokens_details": {"cached_tokens": 1},
                    "completion_tokens_details": {"reasoning_tokens": None},
                },
            )
        ]
    )
    state.seq = 1
    assert state.done_fields("stop") == {
        "finish_reason": "stop",
        "model": "anthropic/claude",
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 2,
            "total_tokens": 5,
            "cost": 0.1,
            "cached_tokens": 1,
        },
        "last_seq": 0,
        "generation_id": "gen-1",
        "provider": "Anthropic",
        "native_finish_reason": "end_turn",
    }
