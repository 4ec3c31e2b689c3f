"""llm_relay_client, protocol v2: typed events, one seq across kinds, tool helpers."""

from __future__ import annotations

import enum
import io
import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import pytest

from llm_relay_client import (
    ChatError,
    Done,
    Failure,
    Reasoning,
    Token,
    ToolCall,
    ToolCallDelta,
    Tools,
)
from llm_relay_client.cli_output import DIM, RESET, Output
from llm_relay_client.models import Messages
from llm_relay_client.rooms import Room
from llm_relay_client.stream import Stream
from llm_relay_client.tool_schema import parameters_of
from llm_relay_client.tools import run_tools
from llm_relay_client.tracks import Tracks
from tests.unit.test_client_tracks import Host


def setup() -> tuple[Tracks, Stream, list[str]]:
    healed: list[str] = []
    tracks = Tracks({}, lambda track: healed.append(track.request_id))
    stream = Stream(Host(), "r1", None, {"request_id": "r1", "messages": []})
    tracks.add(stream)
    return tracks, stream, healed


def ev(seq: int, kind: str = "token", **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"request_id": "r1", "seq": seq, **extra}
    if kind in ("token", "reasoning"):
        payload.setdefault("content", f"{kind[0]}{seq} ")
    return payload


DONE_PAYLOAD: dict[str, Any] = {
    "request_id": "r1",
    "finish_reason": "tool_calls",
    "model": "m",
    "usage": {"prompt_tokens": 3, "cached_tokens": 2, "reasoning_tokens": 5},
    "last_seq": 3,
    "generation_id": "gen-1",
    "provider": "P",
    "native_finish_reason": "tool_use",
    "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ],
    "reasoning_details": [{"type": "reasoning.encrypted", "data": "xyz", "index": 0}],
}


async def test_kinds_share_one_seq_and_arrive_typed_in_order() -> None:
    tracks, stream, healed = setup()
    tracks.on_event("reasoning", ev(0, "reasoning"))
    tracks.on_event("reasoning", ev(1, "reasoning"))
    tracks.on_event("token", ev(1))  # a repeat of seq 1, whatever its kind
    tracks.on_event("tool_call", ev(2, "tool_call", index=0, id="c1", name="f", arguments="{"))
    tracks.on_event("token", ev(3))
    tracks.on_event("done", DONE_PAYLOAD)
    events = [e async for e in stream.events()]
    assert [type(e) for e in events] == [Reasoning, Reasoning, ToolCallDelta, Token, Done]
    assert [getattr(e, "seq", None) for e in events] == [0, 1, 2, 3, None]
    assert events[2] == ToolCallDelta("r1", 2, 0, "{", "c1", "f")
    assert (stream.reasoning, stream.text) == ("r0 r1 ", "t3 ")
    assert healed == []


async def test_a_terminal_event_ahead_of_us_waits_for_the_replay() -> None:
    tracks, stream, healed = setup()
    tracks.on_event("reasoning", ev(0, "reasoning"))
    tracks.on_event("done", DONE_PAYLOAD)  # last_seq 3: 1..3 went missing
    assert healed == ["r1"]
    assert not stream.finished
    tracks.on_event("token", ev(1))
    tracks.on_event("tool_call", ev(2, "tool_call", index=0, arguments="}"))
    tracks.on_event("token", ev(3))  # the replay caught up: the held done ends it
    assert stream.finished
    tracks.on_event("done", DONE_PAYLOAD)  # the replay's own copy is dropped
    assert [e.event async for e in stream.events()] == [
        "reasoning",
        "token",
        "tool_call",
        "token",
        "done",
    ]


async def test_an_error_with_last_seq_is_held_too_and_raised() -> None:
    tracks, stream, healed = setup()
    error = {"request_id": "r1", "code": "upstream_error", "message": "m", "last_seq": 0}
    tracks.on_event("error", error)
    assert healed == ["r1"]
    assert not stream.finished
    tracks.on_event("reasoning", ev(0, "reasoning"))
    events = [e async for e in stream.events()]
    assert isinstance(events[-1], Failure)
    assert events[-1].last_seq == 0
    assert events[-1].error.code == "upstream_error"
    with pytest.raises(ChatError) as caught:
        await stream.result()
    assert caught.value.last_seq == 0
    assert caught.value.to_dict()["last_seq"] == 0


def test_done_parses_v2_fields_and_builds_the_assistant_message() -> None:
    done = Done.parse(DONE_PAYLOAD)
    assert (done.last_seq, done.generation_id, done.provider, done.native_finish_reason) == (
        3,
        "gen-1",
        "P",
        "tool_use",
    )
    assert (done.usage.cached_tokens, done.usage.reasoning_tokens) == (2, 5)
    assert done.tool_calls == (ToolCall("c1", "f", '{"a": 1}'),)
    assert done.tool_calls[0].parsed_arguments() == {"a": 1}
    assert done.assistant_message() == {
        "role": "assistant",
        "content": None,
        "tool_calls": DONE_PAYLOAD["tool_calls"],
        "reasoning_details": DONE_PAYLOAD["reasoning_details"],
    }
    plain = Done.parse({"request_id": "r", "finish_reason": "stop", "usage": {}})
    assert plain.assistant_message("Hi") == {"role": "assistant", "content": "Hi"}
    assert (plain.last_seq, plain.tool_calls) == (None, ())


class Unit(enum.Enum):
    C = "celsius"
    F = "fahrenheit"


def test_parameters_from_type_hints() -> None:
    def forecast(
        city: Annotated[str, "a city name"],
        days: int = 3,
        unit: Unit = Unit.C,
        detail: Literal["short", "long"] | None = None,
        hours: list[float] | None = None,
        extra: dict[str, Any] | None = None,
        metric: bool = True,
    ) -> str:
        return ""

    schema = parameters_of(forecast)
    assert schema["required"] == ["city"]
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["city"] == {"type": "string", "description": "a city name"}
    assert props["days"] == {"type": "integer", "default": 3}
    assert props["unit"] == {"enum": ["celsius", "fahrenheit"], "type": "string"}
    assert props["detail"] == {
        "anyOf": [{"enum": ["short", "long"], "type": "string"}, {"type": "null"}]
    }
    assert props["hours"] == {
        "anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "null"}]
    }
    assert props["extra"] == {"anyOf": [{"type": "object"}, {"type": "null"}]}
    assert props["metric"] == {"type": "boolean", "default": True}


def test_unsupported_hints_ask_for_an_explicit_schema() -> None:
    def untyped(x) -> str:  # type: ignore[no-untyped-def]
        return ""

    def star(*args: int) -> str:
        return ""

    def odd(x: complex) -> str:
        return ""

    for function in (untyped, star, odd):
        with pytest.raises(TypeError, match="parameters="):
            parameters_of(function)
    tools = Tools()
    explicit = {"type": "object", "properties": {"x": {"type": "string"}}}
    tools.register(name="odd", description="Odd.", parameters=explicit)(odd)
    assert tools.definitions() == [
        {
            "type": "function",
            "function": {"name": "odd", "parameters": explicit, "description": "Odd."},
        }
    ]


async def test_tool_failures_become_the_result_text() -> None:
    tools = Tools()

    @tools.register
    def divide(a: float, b: float) -> float:
        """Divide a by b.

        Long description that is not sent."""
        return a / b

    @tools.register
    async def echo(text: str) -> dict[str, str]:
        return {"echo": text}

    assert tools.definitions()[0]["function"]["description"] == "Divide a by b."
    ok = await tools.call(ToolCall("1", "divide", '{"a": 1, "b": 4}'))
    assert (ok.content, ok.failed) == ("0.25", False)
    assert (await tools.call(ToolCall("2", "echo", '{"text": "é"}'))).content == '{"echo": "é"}'
    failures = [
        (ToolCall("3", "divide", '{"a": 1, "b": 0}'), "Error: ZeroDivisionError: "),
        (ToolCall("4", "divide", '{"a": 1}'), "Error: TypeError: "),
        (ToolCall("5", "divide", "[1, 2]"), "Error: the arguments are not a JSON object"),
        (ToolCall("6", "divide", "{not json"), "Error: the arguments are not a JSON object"),
        (ToolCall("7", "nope", "{}"), "Error: there is no tool named 'nope'."),
    ]
    for call, start in failures:
        result = await tools.call(call)
        assert result.failed
        assert result.content.startswith(start), result
        assert result.message() == {
            "role": "tool",
            "tool_call_id": call.id,
            "content": result.content,
        }


class ScriptedServer:
    """Answers each request with the next scripted ``done`` (the network side)."""

    def __init__(self, answers: Sequence[dict[str, Any]]) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []
        self.tracks = Tracks({}, lambda track: None)

    async def _begin(self, stream: Stream) -> None:
        self.requests.append(stream.payload)
        track = self.tracks.add(stream)
        answer = self.answers.pop(0)
        self.tracks.on_event("token", {"request_id": track.request_id, "seq": 0, "content": "…"})
        self.tracks.on_event("done", {**answer, "request_id": track.request_id, "last_seq": 0})

    async def cancel(self, request_id: str) -> None:
        return None

    def stream(self, messages: Messages, **options: Any) -> Stream:
        rid = f"r{len(self.requests)}"
        payload = {"request_id": rid, "messages": list(messages), **options}
        if isinstance(options.get("tools"), Tools):
            payload["tools"] = options["tools"].definitions()
        return Stream(self, rid, None, payload)


def tool_done(*calls: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "finish_reason": "tool_calls",
        "usage": {},
        "tool_calls": [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
            for i, n, a in calls
        ],
    }


async def test_run_tools_loops_until_an_answer_and_is_bounded() -> None:
    tools = Tools()
    ran: list[str] = []

    @tools.register
    def lookup(key: str) -> str:
        ran.append(key)
        if key == "bad":
            raise KeyError(key)
        return f"value of {key}"

    server = ScriptedServer(
        [
            tool_done(("c1", "lookup", '{"key": "a"}'), ("c2", "lookup", '{"key": "bad"}')),
            {"finish_reason": "stop", "usage": {}},
        ]
    )
    seen: list[str] = []
    run = await run_tools(server.stream, "Q", tools, on_event=lambda e: seen.append(e.event))
    assert ran == ["a", "bad"]
    assert (run.text, run.rounds, run.done.finish_reason) == ("…", 2, "stop")
    assert seen == ["token", "done", "token", "done"]
    second = server.requests[1]["messages"]
    assert second[1]["role"] == "assistant"
    assert len(second[1]["tool_calls"]) == 2
    assert second[2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "value of a"},
        {"role": "tool", "tool_call_id": "c2", "content": "Error: KeyError: 'bad'"},
    ]
    assert server.requests[0]["tools"] == tools.definitions()
    assert run.messages[-1] == {"role": "assistant", "content": "…"}

    endless = ScriptedServer([tool_done(("c", "lookup", '{"key": "x"}'))] * 3)
    with pytest.raises(ChatError) as caught:
        await run_tools(endless.stream, "Q", tools, max_rounds=3)
    assert caught.value.code == "max_tool_rounds"
    assert len(endless.requests) == 3


def test_cli_output_text_reasoning_and_json() -> None:
    out = io.StringIO()
    output = Output(False, out, io.StringIO(), reasoning=True)
    output.event("reasoning", {"content": "hmm"})
    output.event("token", {"content": "Hi"})
    output.event("done", {"tool_calls": DONE_PAYLOAD["tool_calls"]})
    output.end_of_answer()
    assert out.getvalue() == 'hmm\n\nHi\n[tool call f: {"a": 1}]\n'
    assert DIM not in out.getvalue()  # not a terminal

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    output = Output(False, tty, io.StringIO(), reasoning=True)
    output.event("reasoning", {"content": "hmm\n"})
    output.event("token", {"content": "Hi"})
    output.end_of_answer()
    assert tty.getvalue() == f"{DIM}hmm\n{RESET}\nHi\n"

    hidden = io.StringIO()
    output = Output(False, hidden, io.StringIO())
    output.event("reasoning", {"content": "hmm"})
    output.event("token", {"content": "Hi"})
    assert hidden.getvalue() == "Hi"

    lines = io.StringIO()
    output = Output(True, lines, io.StringIO())
    output.event("reasoning", {"request_id": "r", "seq": 0, "content": "é"})
    assert json.loads(lines.getvalue()) == {
        "type": "reasoning",
        "request_id": "r",
        "seq": 0,
        "content": "é",
    }


async def test_another_members_request_seen_only_at_its_end_just_ends() -> None:
    healed: list[str] = []
    rooms = {"lobby": Room(Host(), "lobby")}
    tracks = Tracks(rooms, lambda track: healed.append(track.request_id))
    tracks.on_event("done", {**DONE_PAYLOAD, "request_id": "theirs", "room": "lobby"})
    assert healed == []
    assert len(tracks) == 0
    assert isinstance(await rooms["lobby"].__anext__(), Done)
