"""The chat admission path: v2 request validation, dialects, the upstream body, pseudonyms,
and the claims of a request (what a refusal leaves claimed and counted)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from auth.tokens import Identity
from events.core.admission import Admission, PipelineConfig, Requester, payload_size
from events.core.errors import ErrorCode, ProtocolError
from events.core.models import ChatRequest
from events.core.pseudonym import UserPseudonym
from services.budget import BudgetLimits, Budgets
from services.generations import GenerationRegistry
from services.storage.budget_counters import MemoryCounters
from services.storage.limits import MemoryRateLimiter, MemorySlots, MemoryStreamGate

USER = {"role": "user", "content": "hi"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def admission(
    *, streams: int = 8, rate: int = 60, budgets: Budgets | None = None, **config: Any
) -> Admission:
    return Admission(
        PipelineConfig(default_model="m/default", **config),
        registry=GenerationRegistry(),
        streams=MemoryStreamGate(MemorySlots(streams), MemoryRateLimiter(rate)),
        pseudonym=UserPseudonym("secret-1"),
        budgets=budgets,
    )


def refused(data: Any, **config: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        admission(**config).validate(data)
    return info.value


# Every field of ChatRequest and Message, with values a client may send.
FULL: dict[str, Any] = {
    "request_id": "req-full",
    "messages": [
        {
            "role": "system",
            "content": [
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
            ],
        },
        {
            "role": "user",
            "name": "alice",
            "content": [
                {"type": "text", "text": "What is in these?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
                },
                {
                    "type": "file",
                    "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,AAAA"},
                },
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [CALL],
            "reasoning": "I should call f.",
            "reasoning_details": [{"type": "reasoning.encrypted", "data": "eyJ…", "index": 0}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true}'},
    ],
    "model": "openai/gpt-4o",
    "models": ["openai/gpt-4o", "anthropic/claude-sonnet-4.5"],
    "temperature": 1,
    "top_p": 0.9,
    "top_k": 40,
    "min_p": 0.05,
    "top_a": 0.0,
    "frequency_penalty": -0.5,
    "presence_penalty": 0.5,
    "repetition_penalty": 1.1,
    "max_tokens": 512,
    "stop": ["\n\n", "END"],
    "seed": 7,
    "logit_bias": {"50256": -100, "11": 2.5},
    "logprobs": True,
    "top_logprobs": 3,
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather now",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": True,
            },
        }
    ],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False,
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "w",
            "schema": {"type": "object", "x-anything": [1, {"y": None}]},
            "strict": True,
        },
    },
    "reasoning": {"effort": "high", "max_tokens": 2000, "exclude": False, "enabled": True},
    "provider": {"order": ["anthropic"], "allow_fallbacks": True, "max_price": {"prompt": 1}},
    "transforms": ["middle-out"],
    "plugins": [{"id": "web", "max_results": 3}],
}


def test_every_field_is_accepted_and_forwarded_exactly() -> None:
    adm = admission()
    data = json.loads(json.dumps(FULL))
    adm.validate(data)
    body = adm.upstream_body(data, "alice")
    assert "request_id" not in body
    assert "room" not in body
    for name, value in FULL.items():
        if name != "request_id":
            assert json.dumps(body[name]) == json.dumps(value), name
    assert body["user"] == UserPseudonym("secret-1")("alice")


def test_model_default_and_room_messages() -> None:
    adm = admission()
    data = {"messages": [USER], "room": "lobby"}
    adm.validate(data)
    conversation = [{"role": "user", "content": "earlier"}, USER]
    body = adm.upstream_body(data, "alice", conversation)
    assert body == {
        "messages": conversation,
        "model": "m/default",
        "user": UserPseudonym("secret-1")("alice"),
    }


def test_null_fields_are_not_set() -> None:
    adm = admission()
    data = {"messages": [USER], "model": None, "temperature": None, "tools": None, "room": None}
    adm.validate(data)
    assert set(adm.upstream_body(data, "alice")) == {"messages", "model", "user"}


def test_pseudonym_is_stable_per_user_and_keyed() -> None:
    one, again, other_key = UserPseudonym("k1"), UserPseudonym("k1"), UserPseudonym("k2")
    assert one("alice") == again("alice")
    assert one("alice") != one("bob")
    assert one("alice") != other_key("alice")
    assert "alice" not in one("alice")
    assert "k1" not in repr(one)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"min_p": 1.5}, "min_p"),
        ({"top_a": -0.1}, "top_a"),
        ({"frequency_penalty": 3}, "frequency_penalty"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["x"] * 17}, "stop"),
        ({"seed": 1.5}, "seed"),
        ({"logit_bias": {"50256": -101}}, "logit_bias"),
        ({"logit_bias": {"word": 1}}, "logit_bias.word.[key]"),
        ({"logprobs": "yes"}, "logprobs"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"tools": []}, "tools"),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools.0.function.name",
        ),
        ({"tools": [{"type": "retrieval"}]}, "tools.0.type"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {}}}, "tool_choice.function.name"),
        ({"parallel_tool_calls": 1}, "parallel_tool_calls"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "w"}}},
            "response_format.json_schema.schema",
        ),
        ({"reasoning": {"effort": "max"}}, "reasoning.effort"),
        ({"reasoning": {"max_tokens": -1}}, "reasoning.max_tokens"),
        ({"provider": ["anthropic"]}, "provider"),
        ({"transforms": "middle-out"}, "transforms"),
        ({"plugins": ["web"]}, "plugins.0"),
        ({"models": []}, "models"),
        ({"n": 2}, "n"),
        ({"user": "u1"}, "user"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"content": "x"}]}, "messages.0.role"),
        (
            {
                "messages": [
                    USER,
                    USER,
                    {
                        "role": "assistant",
                        "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "{oops"}}],
                    },
                ]
            },
            "messages.2.tool_calls.0.function.arguments",
        ),
        ({"messages": [{"role": "assistant", "content": None}]}, "messages.0.content"),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{**CALL, "type": "code"}]}]},
            "messages.0.tool_calls.0.type",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.tool_call_id"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "a", "cache_control": {"type": "forever"}}
                        ],
                    }
                ]
            },
            "messages.0.content.0.cache_control.type",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": ""}}]}
                ]
            },
            "messages.0.content.0.image_url.url",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "file", "file": {"filename": "a"}}]}
                ]
            },
            "messages.0.content.0.file.file_data",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_audio", "input_audio": {"data": "A", "format": "WAV!"}}
                        ],
                    }
                ]
            },
            "messages.0.content.0.input_audio.format",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "messages.0.content.0.type",
        ),
        ({"messages": [{**USER, "tool_call_id": "x"}]}, "messages.0.tool_call_id"),
    ],
)
def test_malformed_fields_are_refused_naming_the_field(patch: dict[str, Any], field: str) -> None:
    error = refused({"messages": [USER], **patch})
    assert error.code is ErrorCode.INVALID_PAYLOAD
    assert field in [d["field"] for d in error.details or []], error.details


def test_openai_dialect_refuses_openrouter_fields() -> None:
    for name in ("models", "provider", "transforms", "plugins"):
        error = refused({"messages": [USER], name: FULL[name]}, dialect="openai")
        assert error.code is ErrorCode.INVALID_PAYLOAD
        assert [d["field"] for d in error.details or []] == [name]
    admission(dialect="openai").validate({"messages": [USER], "reasoning": {"effort": "low"}})


def test_rooms_hold_text_messages_only() -> None:
    error = refused(
        {"messages": [{"role": "tool", "tool_call_id": "c", "content": "x"}], "room": "r"}
    )
    assert [d["field"] for d in error.details or []] == ["messages.0.role"]


def test_a_lone_surrogate_is_refused_not_measured_as_zero() -> None:
    with pytest.raises(ProtocolError) as info:
        payload_size({"messages": [{"role": "user", "content": "\ud800"}]})
    assert info.value.code is ErrorCode.INVALID_PAYLOAD
    error = refused({"messages": [{"role": "user", "content": "\ud800" + "x" * 10}]})
    assert error.code is ErrorCode.INVALID_PAYLOAD


def test_text_parts_count_toward_the_message_limit() -> None:
    parts = [{"type": "text", "text": "x" * 60}, {"type": "text", "text": "y" * 60}]
    error = refused({"messages": [{"role": "user", "content": parts}]}, max_message_chars=100)
    assert error.code is ErrorCode.PAYLOAD_TOO_LARGE


# -- the claims ---------------------------------------------------------------------------


def requester(conn_id: str, sub: str = "alice") -> Requester:
    return Requester(Identity(sub, sub, None), conn_id, "socketio")


def request(request_id: str) -> ChatRequest:
    return ChatRequest.model_validate({"request_id": request_id, "messages": [USER]})


async def claim_refused(gate: Admission, who: Requester, request_id: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        await gate.claim(who, request(request_id))
    return info.value


async def test_a_request_refused_for_streams_spends_nothing_of_the_rate() -> None:
    gate = admission(streams=1, rate=2)
    held = await gate.claim(requester("c1"), request("r1"))
    for attempt in ("r2", "r3", "r4"):
        refusal = await claim_refused(gate, requester("c2"), attempt)
        assert refusal.code is ErrorCode.TOO_MANY_STREAMS
    await gate.finished("alice", held.slot)
    # the three refusals counted nothing: alice's second request of the minute passes
    second = await gate.claim(requester("c2"), request("r5"))
    await gate.finished("alice", second.slot)
    refusal = await claim_refused(gate, requester("c2"), "r6")
    assert refusal.code is ErrorCode.RATE_LIMITED
    assert refusal.retry_after is not None
    assert 0 < refusal.retry_after <= 60


async def test_a_request_over_the_rate_takes_no_stream_slot() -> None:
    slots = MemorySlots(1)
    gate = Admission(
        PipelineConfig(default_model="m/default"),
        registry=GenerationRegistry(),
        streams=MemoryStreamGate(slots, MemoryRateLimiter(1)),
    )
    first = await gate.claim(requester("c1"), request("r1"))
    assert slots.counts() == {"alice": 1}
    await gate.finished("alice", first.slot)
    for _ in range(2):  # the refused id is not left "in flight" either
        assert (await claim_refused(gate, requester("c1"), "r2")).code is ErrorCode.RATE_LIMITED
        assert slots.counts() == {}


async def test_a_request_refused_for_its_budget_takes_no_slot_and_spends_no_rate() -> None:
    budgets = Budgets(BudgetLimits(100), MemoryCounters())
    gate = admission(streams=1, rate=1, budgets=budgets)
    meter = await budgets.admit("alice")
    assert meter is not None
    assert await meter.spend(100) is False  # the day's budget is spent
    for attempt in ("r1", "r2"):
        refusal = await claim_refused(gate, requester("c1"), attempt)
        assert refusal.code is ErrorCode.BUDGET_EXCEEDED
    # neither refusal holds alice's one slot or her one request of the minute
    unbudgeted = Identity("alice", "alice", None, {"budget": {"tokens_per_day": 0}})
    ticket = await gate.claim(Requester(unbudgeted, "c1", "socketio"), request("r3"))
    assert ticket.meter is None
