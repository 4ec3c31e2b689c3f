"""TOKEN_COALESCE_MS: deltas within a window go out as one `token`; text and seq stay exact.
TOKEN_COALESCE_BUSY_MS: a stream faster than that window is gathered for longer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from tests.harness import Recorder, RunningServer, assert_clean_stream, make_token, run_server
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import NORMAL_TEXT, UTF8_TEXT, Scenario

USER_MSG = [{"role": "user", "content": "Say hello"}]
TRICKLE = [f"t{i} " for i in range(40)]  # 40 deltas, 10 ms apart: about 0.4 s
WINDOW_MS = 100


@pytest.fixture
async def coalescing(
    upstream: UpstreamDouble, settings_for: Callable[..., Any]
) -> AsyncIterator[RunningServer]:
    upstream.scenarios["trickle"] = Scenario(name="trickle", tokens=TRICKLE, delay_s=0.01)
    async with run_server(settings_for(token_coalesce_ms=WINDOW_MS)) as srv:
        yield srv


async def chat(srv: RunningServer, rec: Recorder, request_id: str, model: str) -> dict[str, Any]:
    ack = await rec.call("chat", {"request_id": request_id, "messages": USER_MSG, "model": model})
    assert ack == {"ok": True, "request_id": request_id}
    event, done = await rec.terminal(request_id, timeout=20)
    assert event == "done", done
    assert_clean_stream(rec, request_id)
    return dict(done)


async def test_a_trickle_is_coalesced_and_the_first_token_goes_alone(
    coalescing: RunningServer, recorders: Callable[[], Recorder]
) -> None:
    rec = recorders()
    await rec.connect(coalescing.url, make_token("alice"))
    done = await chat(coalescing, rec, "r1", "double/trickle")
    tokens = rec.tokens("r1")
    assert rec.text("r1") == "".join(TRICKLE)
    assert tokens[0]["content"] == TRICKLE[0]  # the first delta is not held back
    assert len(tokens) < len(TRICKLE) / 2  # 40 deltas in ~0.4 s, 100 ms windows
    assert done["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("model", "text"),
    [
        ("double/normal", NORMAL_TEXT),
        ("double/comments", NORMAL_TEXT),
        ("double/crlf_split", UTF8_TEXT),
        ("double/split_utf8", UTF8_TEXT),
        ("double/no_done", NORMAL_TEXT),
        ("double/slow", " ".join(f"token{i}" for i in range(1, 51))),
    ],
)
async def test_text_is_exact_with_coalescing(
    coalescing: RunningServer, recorders: Callable[[], Recorder], model: str, text: str
) -> None:
    rec = recorders()
    await rec.connect(coalescing.url, make_token("alice"))
    await chat(coalescing, rec, "r1", model)
    assert rec.text("r1") == text


FLOOD = [f"f{i} " for i in range(200)]  # 200 deltas, 2 ms apart: about 0.4 s


@pytest.mark.parametrize(("busy_ms", "most", "least"), [(20, None, 12), (250, 8, None)])
async def test_a_fast_stream_goes_out_in_busy_windows(
    upstream: UpstreamDouble,
    settings_for: Callable[..., Any],
    recorders: Callable[[], Recorder],
    busy_ms: int,
    most: int | None,
    least: int | None,
) -> None:
    """Ten deltas per 20 ms window make the stream busy: with TOKEN_COALESCE_BUSY_MS=250 its
    windows last 250 ms (a few events for ~0.4 s of deltas), with 20 ms they stay 20 ms."""
    upstream.scenarios["flood"] = Scenario(name="flood", tokens=FLOOD, delay_s=0.002)
    settings = settings_for(token_coalesce_ms=20, token_coalesce_busy_ms=busy_ms)
    async with run_server(settings) as srv:
        rec = recorders()
        await rec.connect(srv.url, make_token("alice"))
        await chat(srv, rec, "r1", "double/flood")
    tokens = rec.tokens("r1")
    assert rec.text("r1") == "".join(FLOOD)
    assert tokens[0]["content"] == FLOOD[0]  # the first delta is not held back
    if most is not None:
        assert len(tokens) <= most, len(tokens)
    if least is not None:
        assert len(tokens) >= least, len(tokens)


async def test_errors_still_end_with_one_terminal(
    coalescing: RunningServer, recorders: Callable[[], Recorder]
) -> None:
    rec = recorders()
    await rec.connect(coalescing.url, make_token("alice"))
    await rec.call(
        "chat", {"request_id": "e", "messages": USER_MSG, "model": "double/mid_stream_error"}
    )
    event, error = await rec.terminal("e")
    assert (event, error["code"]) == ("error", "upstream_error")
    assert_clean_stream(rec, "e")


async def test_cancel_inside_a_window_closes_the_upstream(
    coalescing: RunningServer, recorders: Callable[[], Recorder], upstream: UpstreamDouble
) -> None:
    rec = recorders()
    await rec.connect(coalescing.url, make_token("alice"))
    await rec.call("chat", {"request_id": "c", "messages": USER_MSG, "model": "double/trickle"})
    await rec.wait_for(lambda e, d: e == "token" and d["request_id"] == "c")
    recorded = upstream.requests[-1]
    assert await rec.call("cancel", {"request_id": "c"}) == {"ok": True}
    assert await upstream.wait_closed(recorded, timeout=2) < 2
    event, done = await rec.terminal("c")
    assert (event, done["finish_reason"]) == ("done", "cancelled")
    assert_clean_stream(rec, "c")
    assert "".join(TRICKLE).startswith(rec.text("c"))


async def test_raw_completion_frames_forward_every_chunk(coalescing: RunningServer) -> None:
    url = f"{coalescing.ws_url}/websockets/openrouter?format=completion&token={make_token('a')}"
    frames: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_json({"messages": USER_MSG, "model": "double/trickle"})
        while not frames or frames[-1]["type"] not in ("done", "error"):
            frames.append(await ws.receive_json(timeout=10))
    contents = [
        choice["delta"].get("content")
        for f in frames
        if f["type"] == "completion"
        for choice in f["data"]["choices"]
        if choice["delta"].get("content")
    ]
    assert contents == TRICKLE
    assert frames[-1]["type"] == "done"
