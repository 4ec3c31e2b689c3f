"""The demo-mode local model simulator: an in-process ``Upstream`` with three models."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.upstream.base import Chunk, UpstreamError, UpstreamFailure
from services.upstream.simulator import (
    REASONING_MODEL,
    SIMULATOR_MODEL,
    SIMULATOR_MODEL_IDS,
    TOOLS_MODEL,
    Simulator,
    place_in,
    reasoning_text,
    reply_text,
    split_words,
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a place",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}


def body(model: str, *messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    msgs = list(messages) or [{"role": "user", "content": "hi"}]
    return {"model": model, "messages": msgs, **extra}


async def chunks_of(request: dict[str, Any]) -> list[Chunk]:
    sim = Simulator(token_delay_s=0)
    await sim.start()
    try:
        return [chunk async for batch in sim.stream(request) for chunk in batch]
    finally:
        await sim.aclose()


def test_the_place_of_a_weather_question() -> None:
    assert place_in("What's the weather in Lyon?") == "Lyon"
    assert place_in("weather for New York, please") == "New York"
    assert place_in("Saint-Étienne") == "Saint-Étienne"
    assert place_in("") == "Paris"


def test_reply_says_it_is_a_simulator_and_quotes_the_user() -> None:
    text = reply_text("What is  2+2?")
    assert text.startswith("(local simulator — no real model is connected)")
    assert "“What is 2+2?”" in text
    assert "OPENROUTER_API_KEY" in text
    assert "--demo" in text
    assert "- " in text
    assert "`" in text
    assert "".join(split_words(text)) == text
    assert reply_text("x" * 1000).count("x") < 250


async def test_text_model_streams_the_reply_then_stop_and_usage() -> None:
    chunks = await chunks_of(body(SIMULATOR_MODEL))
    assert "".join(c.content for c in chunks) == reply_text("hi")
    assert all(c.reasoning == "" and c.tool_calls is None for c in chunks)
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None
    assert usage["completion_tokens"] == len(split_words(reply_text("hi")))
    assert {c.model for c in chunks} == {SIMULATOR_MODEL}
    assert len({c.generation_id for c in chunks}) == 1
    assert chunks[0].provider == "Local simulator"
    assert chunks[0].raw["object"] == "chat.completion.chunk"


async def test_a_request_without_a_model_gets_the_text_model() -> None:
    chunks = await chunks_of({"messages": [{"role": "user", "content": "hi"}]})
    assert "".join(c.content for c in chunks) == reply_text("hi")


async def test_reasoning_model_thinks_first_then_answers() -> None:
    chunks = await chunks_of(body(REASONING_MODEL))
    first_content = next(i for i, c in enumerate(chunks) if c.content)
    assert all(c.reasoning for c in chunks[:first_content])
    assert not any(c.reasoning for c in chunks[first_content:])
    assert "".join(c.reasoning for c in chunks) == reasoning_text("hi")
    assert "".join(c.content for c in chunks) == reply_text("hi")
    details = [d for c in chunks for d in c.reasoning_details or []]
    assert {d["type"] for d in details} == {"reasoning.text"}
    assert "".join(d["text"] for d in details) == reasoning_text("hi")
    usage = chunks[-1].usage
    assert usage is not None
    assert usage["completion_tokens_details"]["reasoning_tokens"] == len(
        split_words(reasoning_text("hi"))
    )


async def test_tools_model_calls_the_offered_tool_in_pieces() -> None:
    ask = {"role": "user", "content": "What's the weather in Lyon?"}
    chunks = await chunks_of(body(TOOLS_MODEL, ask, tools=[WEATHER_TOOL]))
    deltas = [d for c in chunks for d in c.tool_calls or []]
    assert len(deltas) > 2
    assert {d.index for d in deltas} == {0}
    assert deltas[0].id is not None
    assert deltas[0].name == "get_weather"
    assert all(d.id is None and d.name is None for d in deltas[1:])
    arguments = "".join(d.arguments for d in deltas)
    assert orjson.loads(arguments) == {"location": "Lyon"}
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["tool_calls"]
    assert "".join(c.content for c in chunks) == ""

    call = {"id": deltas[0].id, "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": arguments}
    answered = await chunks_of(
        body(
            TOOLS_MODEL,
            ask,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": deltas[0].id, "content": "Sunny, 21 °C"},
            tools=[WEATHER_TOOL],
        )
    )
    text = "".join(c.content for c in answered)
    assert "`get_weather`" in text
    assert "Sunny, 21 °C" in text
    assert [c.finish_reason for c in answered if c.finish_reason] == ["stop"]
    assert not any(c.tool_calls for c in answered)


async def test_tools_model_without_tools_says_how_to_use_it() -> None:
    chunks = await chunks_of(body(TOOLS_MODEL))
    assert "`tools`" in "".join(c.content for c in chunks)
    assert not any(c.tool_calls for c in chunks)


async def test_other_models_are_refused_like_an_upstream_400() -> None:
    with pytest.raises(UpstreamError) as info:
        await chunks_of(body("openai/gpt-4o"))
    assert (info.value.kind, info.value.status) == (UpstreamFailure.BAD_REQUEST, 400)


async def test_lists_its_models() -> None:
    sim = Simulator()
    assert sim.configured
    assert [m.id for m in await sim.list_models()] == list(SIMULATOR_MODEL_IDS)
