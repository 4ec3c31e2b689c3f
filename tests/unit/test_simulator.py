"""The demo-mode local model simulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from services.upstream.simulator import SIMULATOR_MODEL, Simulator, reply_text, split_words


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    sim = Simulator(token_delay_s=0.001)
    url = await sim.start()
    try:
        yield url
    finally:
        await sim.stop()


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


async def test_streams_openrouter_chunks(base_url: str) -> None:
    body = {"model": "any/model", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base_url}/chat/completions", json=body) as resp,
    ):
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = (await resp.read()).decode()
    events = [e.removeprefix("data: ") for e in raw.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks if c["choices"])
    assert text == reply_text("hi")
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == len(split_words(text))
    assert all(c["model"] == "any/model" for c in chunks)


async def test_non_streaming_and_models(base_url: str) -> None:
    body = {"stream": False, "messages": [{"role": "user", "content": "hello"}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/chat/completions", json=body) as resp:
            data = await resp.json()
        assert data["choices"][0]["message"]["content"] == reply_text("hello")
        async with session.get(f"{base_url}/models") as resp:
            assert (await resp.json())["data"][0]["id"] == SIMULATOR_MODEL
        async with session.post(f"{base_url}/chat/completions", data=b"{nope") as resp:
            assert resp.status == 400
