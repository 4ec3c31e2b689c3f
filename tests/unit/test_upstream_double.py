"""The upstream double itself, driven by a plain aiohttp client."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.upstream_double import SCENARIOS, UpstreamDouble
from tests.upstream_scenarios import NORMAL_TEXT, PARTIAL_SENT, UTF8_TEXT, split_tokens


@pytest.fixture
async def up() -> AsyncIterator[UpstreamDouble]:
    async with UpstreamDouble() as double:
        yield double


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def _body(model: str = "some/model", **kw: Any) -> dict[str, Any]:
    return {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}], **kw}


def _events(raw: bytes) -> list[str]:
    text = raw.decode().replace("\r\n", "\n")
    return [e.removeprefix("data: ") for e in text.split("\n\n") if e.startswith("data: ")]


async def test_normal_stream_has_openrouter_shape(
    up: UpstreamDouble, session: aiohttp.ClientSession
) -> None:
    async with session.post(f"{up.base_url}/chat/completions", json=_body()) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = _events(await resp.read())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    content = chunks[: len(split_tokens(NORMAL_TEXT))]
    assert "".join(c["choices"][0]["delta"]["content"] for c in content) == NORMAL_TEXT
    assert all(
        c["object"] == "chat.completion.chunk" and c["id"].startswith("gen-") for c in chunks
    )
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert set(chunks[-1]["usage"]) == {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost",
    }
    rec = await up.wait_for_request()
    assert rec.headers["content-type"] == "application/json"
    await up.wait_closed(rec)
    assert rec.completed
    assert not rec.closed_by_client
    assert rec.sent_text == NORMAL_TEXT


async def test_split_utf8_arrives_in_pieces_cut_inside_characters(
    up: UpstreamDouble, session: aiohttp.ClientSession
) -> None:
    reads: list[bytes] = []
    async with session.post(
        f"{up.base_url}/chat/completions", json=_body("double/split_utf8")
    ) as r:
        async for piece in r.content.iter_any():
            reads.append(piece)
    events = _events(b"".join(reads))
    text = "".join(
        c["choices"][0]["delta"]["content"] for c in map(json.loads, events[:-1]) if c["choices"]
    )
    assert text == UTF8_TEXT
    assert len(reads) > len(events)

    def cut_inside_char(b: bytes) -> bool:
        try:
            b.decode()
        except UnicodeDecodeError:
            return True
        return False

    assert any(cut_inside_char(b) for b in reads)
    assert any(b.endswith(b"dat") for b in reads)


async def test_429_then_ok_counts_per_scenario(
    up: UpstreamDouble, session: aiohttp.ClientSession
) -> None:
    url = f"{up.base_url}/chat/completions"
    async with session.post(url, json=_body("double/http_429_then_ok")) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "0"
        assert (await resp.json())["error"]["code"] == 429
    async with session.post(url, json=_body("double/http_429_then_ok")) as resp:
        assert resp.status == 200
        assert _events(await resp.read())[-1] == "[DONE]"
    assert [r.status for r in up.requests] == [429, 200]


@pytest.mark.parametrize("name", ["hang", "slow"])
async def test_client_close_is_recorded_quickly(
    up: UpstreamDouble, session: aiohttp.ClientSession, name: str
) -> None:
    async def call() -> None:
        async with session.post(f"{up.base_url}/chat/completions", json=_body(f"double/{name}")):
            await asyncio.sleep(30)

    task = asyncio.create_task(call())
    rec = await up.wait_for_request()
    await asyncio.sleep(0.3)
    task.cancel()
    t0 = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await up.wait_closed(rec, since=t0) < 1.0
    assert rec.closed_by_client
    assert not rec.completed
    assert rec.scenario == name


@pytest.mark.parametrize(
    ("name", "tail"),
    [("mid_stream_error", '"finish_reason": "error"'), ("malformed", "{not json")],
)
async def test_failing_scenarios_send_the_partial_text(
    up: UpstreamDouble, session: aiohttp.ClientSession, name: str, tail: str
) -> None:
    async with session.post(f"{up.base_url}/chat/completions", json=_body(f"double/{name}")) as r:
        events = _events(await r.read())
    assert tail in events[-1]
    rec = up.requests[0]
    await up.wait_closed(rec)
    assert rec.sent_text == PARTIAL_SENT


async def test_truncated_breaks_the_body(
    up: UpstreamDouble, session: aiohttp.ClientSession
) -> None:
    async with session.post(f"{up.base_url}/chat/completions", json=_body("double/truncated")) as r:
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()


async def test_echo_and_models(up: UpstreamDouble, session: aiohttp.ClientSession) -> None:
    body = _body("double/echo", stream=False)
    async with session.post(f"{up.base_url}/chat/completions", json=body) as resp:
        assert (await resp.json())["choices"][0]["message"]["content"] == "echo: hi"
    async with session.get(f"{up.base_url}/models") as resp:
        ids = [m["id"] for m in (await resp.json())["data"]]
    assert {f"double/{n}" for n in SCENARIOS} <= set(ids)
