"""Protocol v2 end to end: reasoning and tool-call events, one seq, done's new fields,
every request field reaching the upstream as sent, raw frames, rooms (PROTOCOL.md §1, §2)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.harness import (
    STREAM_EVENTS,
    Recorder,
    RunningServer,
    assert_clean_stream,
    base_settings,
    make_token,
    run_server,
)
from tests.integration.resume_helpers import connect
from tests.unit.test_admission import FULL
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import (
    DETAILED_USAGE,
    NORMAL_TEXT,
    PARALLEL_TOOL_CALLS,
    PARTIAL_SENT,
    REASONING_TEXT,
    SLOW_THINKER_S,
)

Factory = Callable[[], Recorder]
ASK = [{"role": "user", "content": "Weather and time in Paris?"}]


def chat(request_id: str, model: str, **extra: Any) -> dict[str, Any]:
    return {"request_id": request_id, "messages": ASK, "model": model, **extra}


def stream(rec: Recorder, request_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e, d) for e, d in rec.of(request_id) if e in STREAM_EVENTS]


def joined(events: list[tuple[str, dict[str, Any]]], kind: str) -> str:
    return "".join(d["content"] for e, d in events if e == kind)


def assert_one_seq(events: list[tuple[str, dict[str, Any]]], first: int = 0) -> None:
    assert [d["seq"] for _, d in events] == list(range(first, first + len(events))), events


def arguments_by_index(events: list[tuple[str, dict[str, Any]]]) -> dict[int, str]:
    out: dict[int, str] = {}
    for event, data in events:
        if event == "tool_call":
            out[data["index"]] = out.get(data["index"], "") + data["arguments"]
    return out


@pytest.mark.parametrize("scenario", ["reasoning", "reasoning_content"])
async def test_reasoning_and_answer_are_separate_events_on_one_seq(
    server: RunningServer, recorders: Factory, scenario: str
) -> None:
    rec = await connect(server.url, recorders())
    assert (await rec.call("chat", chat("r1", f"double/{scenario}")))["ok"] is True
    event, done = await rec.terminal("r1")
    assert event == "done"
    assert_clean_stream(rec, "r1")
    events = stream(rec, "r1")
    kinds = [e for e, _ in events]
    assert set(kinds) == {"reasoning", "token"}
    assert kinds == sorted(kinds)  # every reasoning event before the first token
    assert joined(events, "reasoning") == REASONING_TEXT
    assert joined(events, "token") == NORMAL_TEXT
    assert done["last_seq"] == events[-1][1]["seq"]
    assert done["generation_id"].startswith("gen-")
    assert done["provider"] == "Double"
    assert done["native_finish_reason"] == "stop"
    if scenario == "reasoning":  # pieces of one index merged into one detail
        assert done["reasoning_details"] == [
            {
                "type": "reasoning.text",
                "text": REASONING_TEXT,
                "index": 0,
                "format": "anthropic-claude-v1",
            }
        ]
    else:
        assert "reasoning_details" not in done


async def test_usage_details_and_encrypted_reasoning_in_done(
    server: RunningServer, recorders: Factory
) -> None:
    rec = await connect(server.url, recorders())
    await rec.call("chat", chat("u1", "double/usage_details"))
    _, done = await rec.terminal("u1")
    assert done["usage"] == {
        "prompt_tokens": 194,
        "completion_tokens": 12,
        "total_tokens": 206,
        "cost": DETAILED_USAGE["cost"],
        "cached_tokens": 128,
        "reasoning_tokens": 7,
    }
    await rec.call("chat", chat("u2", "double/reasoning_encrypted"))
    _, done = await rec.terminal("u2")
    assert done["reasoning_details"][0]["type"] == "reasoning.encrypted"
    assert done["reasoning_details"][0]["data"].startswith("gAAAA")


async def test_a_slow_thinker_outlasts_the_first_token_timeout(
    settings_for: Callable[..., Any], recorders: Factory
) -> None:
    async with run_server(settings_for(upstream_first_token_timeout_s=3)) as srv:
        rec = await connect(srv.url, recorders())
        await rec.call("chat", chat("t1", "double/slow_thinker"))
        event, done = await rec.terminal("t1", timeout=SLOW_THINKER_S + 10)
        assert (event, done["finish_reason"]) == ("done", "stop")
        events = stream(rec, "t1")
        assert joined(events, "token") == NORMAL_TEXT
        assert joined(events, "reasoning") == "".join(f"thought{i} " for i in range(12))
        assert_one_seq(events)


async def test_parallel_tool_calls_stream_and_assemble_then_the_follow_up_goes_upstream_as_sent(
    server: RunningServer, upstream: UpstreamDouble, recorders: Factory
) -> None:
    rec = await connect(server.url, recorders())
    await rec.call("chat", chat("c1", "double/tool_calls_parallel"))
    event, done = await rec.terminal("c1")
    assert event == "done"
    assert_clean_stream(rec, "c1")
    events = stream(rec, "c1")
    assert {e for e, _ in events} == {"tool_call"}
    expected = {i: call["function"]["arguments"] for i, call in enumerate(PARALLEL_TOOL_CALLS)}
    assert arguments_by_index(events) == expected
    firsts = {}
    for _, data in events:
        firsts.setdefault(data["index"], data)
    for index, call in enumerate(PARALLEL_TOOL_CALLS):
        assert firsts[index]["id"] == call["id"]
        assert firsts[index]["name"] == call["function"]["name"]
    later = [d for _, d in events if d is not firsts[d["index"]]]
    assert all("id" not in d and "name" not in d for d in later)
    assert done["finish_reason"] == "tool_calls"
    assert done["tool_calls"] == PARALLEL_TOOL_CALLS
    assert done["last_seq"] == len(events) - 1

    follow_up = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": done["tool_calls"]},
        {"role": "tool", "tool_call_id": "call_weather_1", "content": '{"temp_c": 21}'},
        {"role": "tool", "tool_call_id": "call_time_2", "content": '{"time": "12:00"}'},
    ]
    await rec.call("chat", {"request_id": "c2", "messages": follow_up, "model": "double/normal"})
    assert (await rec.terminal("c2"))[0] == "done"
    assert json.dumps(upstream.requests[-1].body["messages"]) == json.dumps(follow_up)


async def test_every_field_reaches_the_upstream_exactly_as_sent(
    settings_for: Callable[..., Any], upstream: UpstreamDouble, recorders: Factory
) -> None:
    full = {**FULL, "model": "double/normal", "models": ["double/normal", "double/slow"]}
    pseudonyms = []
    for node in range(2):  # two nodes of one deployment give a user one pseudonym
        async with run_server(settings_for()) as srv:
            rec = await connect(srv.url, recorders())
            ack = await rec.call("chat", {**full, "request_id": f"f{node}"})
            assert ack == {"ok": True, "request_id": f"f{node}"}
            assert (await rec.terminal(f"f{node}"))[0] == "done"
            body = upstream.requests[-1].body
            for name, value in full.items():
                if name != "request_id":
                    assert json.dumps(body[name]) == json.dumps(value), name
            assert "request_id" not in body
            assert "room" not in body
            pseudonyms.append(body["user"])
            bob = await connect(srv.url, recorders(), "bob")
            await bob.call("chat", chat("b1", "double/normal"))
            await bob.terminal("b1")
            assert upstream.requests[-1].body["user"] not in (body["user"], "bob")
    assert pseudonyms[0] == pseudonyms[1]
    assert "alice" not in pseudonyms[0]


async def test_an_error_after_streaming_began_carries_last_seq(
    settings_for: Callable[..., Any], recorders: Factory
) -> None:
    async with run_server(settings_for(token_coalesce_ms=0)) as srv:
        rec = await connect(srv.url, recorders())
        await rec.call("chat", chat("e1", "double/mid_stream_error"))
        event, error = await rec.terminal("e1")
        assert event == "error"
        assert rec.text("e1") == PARTIAL_SENT
        assert error["last_seq"] == len(rec.tokens("e1")) - 1
        await rec.call("chat", chat("e2", "double/http_400"))
        event, error = await rec.terminal("e2")
        assert event == "error"
        assert "last_seq" not in error


async def test_room_members_get_reasoning_and_history_keeps_only_the_answer(
    server: RunningServer, recorders: Factory
) -> None:
    alice = await connect(server.url, recorders())
    bob = await connect(server.url, recorders(), "bob")
    for rec in (alice, bob):
        assert (await rec.call("join", {"room": "think"}))["ok"] is True
    ack = await alice.call("chat", {**chat("m1", "double/reasoning"), "room": "think"})
    assert ack["ok"] is True
    for rec in (alice, bob):
        event, _ = await rec.terminal("m1")
        assert event == "done"
        events = stream(rec, "m1")
        assert all(d["room"] == "think" for _, d in events)
        assert joined(events, "reasoning") == REASONING_TEXT
        assert joined(events, "token") == NORMAL_TEXT
        assert_one_seq(events)
    carol = await connect(server.url, recorders(), "carol")
    history = (await carol.call("join", {"room": "think"}))["history"]
    assert [(m["role"], m["content"]) for m in history][-1] == ("assistant", NORMAL_TEXT)
    refused = await alice.call(
        "chat",
        {
            "messages": [{"role": "tool", "tool_call_id": "x", "content": "{}"}],
            "room": "think",
        },
    )
    assert refused["error"]["code"] == "invalid_payload"


async def frames(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while not out or out[-1]["type"] not in ("done", "error"):
        out.append(await ws.receive_json(timeout=10))
    return out


async def test_raw_endpoint_frames_of_every_kind(server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {make_token('alice')}"}
    url = f"{server.ws_url}/websockets/openrouter"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=headers) as ws:
        await ws.send_json({"messages": ASK, "model": "double/reasoning"})
        got = await frames(ws)
        kinds = [f["type"] for f in got]
        assert set(kinds) == {"reasoning", "token", "done"}
        assert "".join(f["content"] for f in got if f["type"] == "reasoning") == REASONING_TEXT
        assert [f["seq"] for f in got[:-1]] == list(range(len(got) - 1))
        assert got[-1]["last_seq"] == len(got) - 2

        await ws.send_json({"messages": ASK, "model": "double/tool_calls_parallel"})
        got = await frames(ws)
        assert {f["type"] for f in got} == {"tool_call", "done"}
        calls = [(f["type"], f) for f in got if f["type"] == "tool_call"]
        assert arguments_by_index(calls) == {
            i: call["function"]["arguments"] for i, call in enumerate(PARALLEL_TOOL_CALLS)
        }
        assert got[-1]["tool_calls"] == PARALLEL_TOOL_CALLS

        bad = [*ASK, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
               "function": {"name": "f", "arguments": "{not json"}}]}]  # fmt: skip
        await ws.send_json({"request_id": "bad1", "messages": bad})
        error = await ws.receive_json(timeout=5)
        assert (error["type"], error["code"], error["request_id"]) == (
            "error",
            "invalid_payload",
            "bad1",
        )
        fields = [d["field"] for d in error["details"]]
        assert fields == ["messages.1.tool_calls.0.function.arguments"]

    query = f"?format=completion&token={make_token('alice')}"
    async with aiohttp.ClientSession() as http, http.ws_connect(url + query) as ws:
        await ws.send_json({"messages": ASK, "model": "double/reasoning"})
        got = await frames(ws)
        assert {f["type"] for f in got} == {"completion", "done"}  # the chunks carry it all
        reasoning = "".join(
            f["data"]["choices"][0]["delta"].get("reasoning") or ""
            for f in got
            if f["type"] == "completion" and f["data"]["choices"]
        )
        assert reasoning == REASONING_TEXT


async def test_openai_dialect_refuses_openrouter_fields_and_forwards_the_rest(
    recorders: Factory,
) -> None:
    openai_fields = {k: v for k, v in FULL.items() if k not in ("models", "provider",
                     "transforms", "plugins")}  # fmt: skip
    async with (
        UpstreamDouble(dialect="openai") as strict,
        run_server(base_settings(strict.base_url, upstream_dialect="openai")) as srv,
    ):
        rec = await connect(srv.url, recorders())
        refused = await rec.call("chat", {**FULL, "request_id": "no", "model": "double/normal"})
        assert refused["error"]["code"] == "invalid_payload"
        assert [d["field"] for d in refused["error"]["details"]] == [
            "models",
            "provider",
            "transforms",
            "plugins",
        ]
        assert not strict.requests
        ack = await rec.call("chat", {**openai_fields, "model": "double/normal"})
        assert ack["ok"] is True
        event, done = await rec.terminal(openai_fields["request_id"])
        assert event == "done", done  # the strict upstream took every field
        body = strict.requests[-1].body
        for name, value in openai_fields.items():
            if name not in ("request_id", "model"):
                assert json.dumps(body[name]) == json.dumps(value), name
