"""The Python client and ``chat`` speaking protocol v2: reasoning, tool calls, the tool helper.

Against a real server and the upstream double (or the demo's in-process simulator).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from llm_relay_client import (
    ChatClient,
    Done,
    Reasoning,
    StreamEvent,
    SyncChatClient,
    Token,
    ToolCallDelta,
    Tools,
)
from tests.harness import RunningServer, base_settings, make_token, run_server
from tests.integration.test_pyclient import client_for, kill_transport
from tests.integration.test_pyclient_cli import run_cli, token_args
from tests.upstream_double import Scenario, UpstreamDouble
from tests.upstream_scenarios import (
    NORMAL_TEXT,
    PARALLEL_TOOL_CALLS,
    PARALLEL_TOOL_PIECES,
    REASONING_TEXT,
    split_tokens,
)


def seqs(events: list[StreamEvent]) -> list[int]:
    return [e.seq for e in events if isinstance(e, Reasoning | Token | ToolCallDelta)]


async def test_reasoning_then_answer_typed_in_one_gapless_seq(server: RunningServer) -> None:
    async with client_for(server) as client:
        stream = client.stream("Hi", model="double/reasoning")
        events = [event async for event in stream.events()]
    kinds = [type(e) for e in events]
    first_token = kinds.index(Token)
    assert set(kinds[:first_token]) == {Reasoning}
    assert set(kinds[first_token:-1]) == {Token}
    assert kinds[-1] is Done
    assert seqs(events) == list(range(len(events) - 1))
    assert "".join(e.content for e in events if isinstance(e, Reasoning)) == REASONING_TEXT
    assert (stream.reasoning, stream.text) == (REASONING_TEXT, NORMAL_TEXT)
    done = stream.done
    assert done is not None
    assert done.last_seq == len(events) - 2
    assert done.reasoning_details
    assert {d.get("type") for d in done.reasoning_details} == {"reasoning.text"}
    assert done.generation_id is not None
    assert done.generation_id.endswith("-double")
    assert done.provider == "Double"


async def test_resume_across_kinds_after_killed_transports(
    upstream: UpstreamDouble, settings_for: Callable[..., Any]
) -> None:
    thinking = [f"thought{i} " for i in range(15)]
    upstream.scenarios["slow_both"] = Scenario(
        name="slow_both",
        reasoning=thinking,
        reasoning_delay_s=0.1,
        tokens=split_tokens(NORMAL_TEXT),
        delay_s=0.1,
    )
    async with run_server(settings_for(resume_grace_s=20)) as srv, client_for(srv) as client:
        stream = client.stream("Hi", model="double/slow_both")
        events: list[StreamEvent] = []
        async for event in stream.events():
            events.append(event)
            if len(events) in (4, 20):  # once while it thinks, once while it answers
                await kill_transport(client)
    assert isinstance(events[3], Reasoning)
    assert isinstance(events[19], Token)
    assert seqs(events) == list(range(len(events) - 1))
    assert (stream.reasoning, stream.text) == ("".join(thinking), NORMAL_TEXT)
    assert isinstance(events[-1], Done)
    assert events[-1].last_seq == len(events) - 2
    assert len(upstream.requests) == 1


async def test_tool_helper_runs_the_functions_and_sends_their_results(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    """Round 1: the model asks for two calls (streamed interleaved); both functions run with
    the parsed arguments (one of them fails); round 2 carries the assistant's calls and the
    ``tool`` results to the upstream, unchanged; its answer ends the run."""
    upstream.scenarios["agent"] = Scenario(
        name="agent", text="", tool_calls=PARALLEL_TOOL_PIECES, finish_reason="tool_calls"
    )
    tools = Tools()
    ran: list[tuple[str, str]] = []

    @tools.register
    def get_weather(location: str) -> str:
        """The weather at a location."""
        ran.append(("get_weather", location))
        return f"Sunny in {location}"

    @tools.register
    async def get_time(timezone: str) -> str:
        ran.append(("get_time", timezone))
        raise LookupError(f"no clock for {timezone}")

    seen: list[StreamEvent] = []

    def on_event(event: StreamEvent) -> None:
        seen.append(event)
        if isinstance(event, Done):  # the next round answers with text
            upstream.scenarios["agent"] = Scenario(name="agent")

    async with client_for(server) as client:
        run = await client.run_tools(
            "Weather and time in Paris?", tools, model="double/agent", on_event=on_event
        )
    assert ran == [("get_weather", "Paris, FR"), ("get_time", "Europe/Paris")]
    assert (run.text, run.rounds, run.done.finish_reason) == (NORMAL_TEXT, 2, "stop")
    deltas = [e for e in seen if isinstance(e, ToolCallDelta)]
    assert len(deltas) == len(PARALLEL_TOOL_PIECES)
    first, second = upstream.requests[-2:]
    assert first.body["tools"] == tools.definitions()
    assert first.body["tools"][0]["function"]["parameters"]["required"] == ["location"]
    assert second.body["tools"] == tools.definitions()
    assert second.body["messages"] == [
        {"role": "user", "content": "Weather and time in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": PARALLEL_TOOL_CALLS},
        {"role": "tool", "tool_call_id": "call_weather_1", "content": "Sunny in Paris, FR"},
        {
            "role": "tool",
            "tool_call_id": "call_time_2",
            "content": "Error: LookupError: no clock for Europe/Paris",
        },
    ]
    assert [r.failed for r in run.results] == [False, True]
    assert run.messages[-1] == {"role": "assistant", "content": NORMAL_TEXT}


async def test_readme_tool_snippet_runs_against_the_demo_simulator(
    upstream: UpstreamDouble,
) -> None:
    tools = Tools()

    @tools.register
    def get_weather(location: str) -> str:
        """The current weather at a location."""
        return f"Sunny, 21 °C in {location}"

    settings = base_settings(upstream.base_url, demo=True)
    # a guest: no token in demo mode
    async with run_server(settings) as demo, ChatClient(demo.url) as client:
        run = await client.run_tools("Paris", tools, model="local/simulator-tools")
        assert run.rounds == 2
        assert [(r.call.name, r.content) for r in run.results] == [
            ("get_weather", "Sunny, 21 °C in Paris")
        ]
        assert "Sunny, 21 °C in Paris" in run.text
        stream = client.stream("Hi", model="local/simulator-reasoning")
        kinds = [type(e) async for e in stream.events()]
        assert kinds[0] is Reasoning
        assert kinds[-2:] == [Token, Done]

    def sync_script() -> str:
        with SyncChatClient(demo.url) as sync:
            events = list(sync.stream("Hi", model="local/simulator-reasoning").events())
            assert type(events[0]) is Reasoning
            return sync.run_tools("Lyon", tools, model="local/simulator-tools").text

    async with run_server(settings) as demo:
        assert "Sunny, 21 °C in Lyon" in await asyncio.to_thread(sync_script)
    assert upstream.requests == []  # the simulator is in process


@pytest.mark.parametrize("model", ["double/reasoning", "double/tool_calls_parallel"])
async def test_cli_json_prints_every_event(server: RunningServer, model: str) -> None:
    code, out, err = await run_cli(*token_args(server), "--json", "-m", model, "Hi")
    assert (code, err) == (0, "")
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["type"] == "session"
    assert events[0]["protocol"] == 2
    stream = events[1:-1]
    assert [e["seq"] for e in stream] == list(range(len(stream)))
    done = events[-1]
    assert done["type"] == "done"
    assert done["last_seq"] == len(stream) - 1
    if model == "double/reasoning":
        assert {e["type"] for e in stream} == {"reasoning", "token"}
        text = "".join(e["content"] for e in stream if e["type"] == "reasoning")
        assert text == REASONING_TEXT
    else:
        assert {e["type"] for e in stream} == {"tool_call"}
        assert [e.get("name") for e in stream if "name" in e] == ["get_weather", "get_time"]
        assert done["tool_calls"] == PARALLEL_TOOL_CALLS
        assert done["finish_reason"] == "tool_calls"


async def test_cli_reasoning_and_v2_options(
    server: RunningServer, upstream: UpstreamDouble, tmp_path: Any
) -> None:
    code, out, _err = await run_cli(*token_args(server), "-m", "double/reasoning", "Hi")
    assert (code, out) == (0, NORMAL_TEXT + "\n")  # reasoning only when asked for
    code, out, _err = await run_cli(
        *token_args(server),
        "--reasoning",
        "--reasoning-effort",
        "high",
        "--top-p",
        "0.5",
        "--seed",
        "7",
        "--stop",
        "END",
        "-m",
        "double/reasoning",
        "Hi",
    )
    assert code == 0
    assert out == f"{REASONING_TEXT}\n\n{NORMAL_TEXT}\n"  # not a terminal: no ANSI codes
    body = upstream.requests[-1].body
    assert (body["reasoning"], body["top_p"], body["seed"], body["stop"]) == (
        {"effort": "high"},
        0.5,
        7,
        ["END"],
    )
    tools_file = tmp_path / "tools.json"
    definitions = Tools(_get_weather).definitions()
    tools_file.write_text(json.dumps(definitions))
    code, out, _err = await run_cli(
        *token_args(server),
        "--tools",
        str(tools_file),
        "--tool-choice",
        "get_weather",
        "-m",
        "double/tool_calls_parallel",
        "Hi",
    )
    assert code == 0
    assert out.splitlines() == [
        f"[tool call {c['function']['name']}: {c['function']['arguments']}]"
        for c in PARALLEL_TOOL_CALLS
    ]
    body = upstream.requests[-1].body
    assert body["tools"] == definitions
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    tools_file.write_text("{not json")
    code, _out, err = await run_cli(*token_args(server), "--tools", str(tools_file), "Hi")
    assert code == 2
    assert "--tools" in err


def _get_weather(location: str) -> str:
    """The weather at a location."""
    return location


async def test_a_guest_cli_run_against_the_demo(upstream: UpstreamDouble) -> None:
    async with run_server(base_settings(upstream.base_url, demo=True)) as demo:
        code, out, err = await run_cli(
            "--url", demo.url, "--reasoning", "-m", "local/simulator-reasoning", "Hi"
        )
    assert (code, err) == (0, "")
    thinking, answer = out.split("\n\n", 1)
    assert thinking.startswith("The user wrote:")
    assert answer.startswith("(local simulator")


async def test_a_room_feed_carries_reasoning_and_answer_in_one_seq(server: RunningServer) -> None:
    async with (
        ChatClient(server.url, token=make_token("alice")) as alice,
        ChatClient(server.url, token=make_token("bob")) as bob,
    ):
        bob_room = await bob.join("thinkers")
        alice_room = await alice.join("thinkers")
        stream = alice_room.stream("Hi", model="double/reasoning")
        await stream.result()
        seen: list[Any] = []
        async for event in bob_room:
            if getattr(event, "request_id", None) == stream.request_id:
                seen.append(event)
                if isinstance(event, Done):
                    break
    assert seqs(seen) == list(range(len(seen) - 1))
    assert "".join(e.content for e in seen if isinstance(e, Reasoning)) == REASONING_TEXT
    assert "".join(e.content for e in seen if isinstance(e, Token)) == NORMAL_TEXT
    assert all(e.room == "thinkers" for e in seen)
    assert seen[-1].last_seq == len(seen) - 2
