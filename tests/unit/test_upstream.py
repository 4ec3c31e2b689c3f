"""The upstream client against a tiny upstream: requests, parsing, failures, retries,
deadlines and closing (coalescing windows: ``test_upstream_coalescing.py``)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import pytest
from aiohttp import web

from services.upstream.client import Chunk, UpstreamClient, UpstreamError, UpstreamFailure
from services.upstream.failures import TEXT, parse_retry_after
from tests.unit.upstream_server import (
    BODY,
    DONE,
    KEY,
    USAGE,
    Handler,
    Observer,
    Upstream,
    collect,
    endless,
    error,
    failure,
    frame,
    make,
    sse,
    text,
)


async def test_normal_stream_sends_request_and_parses_chunks(start: Any, session: Any) -> None:
    up = await start(sse(b": OPENROUTER PROCESSING\n\n", frame("", role="assistant")))
    up.handlers = (sse(frame("Hel"), frame("lo"), frame("", "stop"), USAGE, DONE),)
    observer = Observer()
    batches = await collect(await make(session, up.url, observer))
    assert all(batches)
    chunks = [chunk for batch in batches for chunk in batch]
    assert text(batches) == "Hello"
    assert [c.finish_reason for c in chunks] == [None, None, "stop", None]
    assert chunks[0].model == "test/model"
    assert chunks[-1].content == ""
    assert chunks[-1].usage == {"prompt_tokens": 3, "completion_tokens": 2, "cost": 0.1}
    assert chunks[-1].raw["choices"] == []
    headers, body = up.requests[0]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["HTTP-Referer"] == "https://relay.test"
    assert headers["X-Title"] == "Relay Test"
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "text/event-stream"
    assert body == {
        **BODY,
        "stream": True,
        "stream_options": {"include_usage": True},
        "usage": {"include": True},
    }
    assert observer.statuses == [200]


async def test_comments_and_split_frames(start: Any, session: Any) -> None:
    data = b": OPENROUTER PROCESSING\r\n\r\n" + frame("a ✓ b") + frame(None, "stop") + DONE
    up = await start(sse(*(data[i : i + 7] for i in range(0, len(data), 7))))
    assert text(await collect(await make(session, up.url))) == "a ✓ b"


async def test_missing_done_after_finish_is_fine(start: Any, session: Any) -> None:
    up = await start(sse(frame("ok"), frame("", "length")))
    assert text(await collect(await make(session, up.url))) == "ok"


async def test_a_stream_without_progress_still_yields_its_chunks(start: Any, session: Any) -> None:
    up = await start(sse(frame("", role="assistant"), USAGE, DONE))
    batches = await collect(await make(session, up.url))
    chunks = [chunk for batch in batches for chunk in batch]
    assert (len(chunks), chunks[-1].usage is not None) == (2, True)


async def test_an_overlong_line_is_a_stream_error(start: Any, session: Any) -> None:
    up = await start(sse(frame("x"), b"data: " + b"y" * (1 << 20) + b"\n\n"))
    assert (await failure(await make(session, up.url))).kind is UpstreamFailure.STREAM


async def test_truncated_stream(start: Any, session: Any) -> None:
    up = await start(sse(frame("par"), frame("tial")))
    seen: list[Chunk] = []
    err = await failure(await make(session, up.url), seen)
    assert err.kind is UpstreamFailure.STREAM
    assert err.message == "The model provider's stream failed."
    assert "".join(c.content for c in seen) == "partial"
    assert len(up.requests) == 1


@pytest.mark.parametrize("line", [b"data: {not json\n\n", b"data: [1, 2]\n\n"])
async def test_malformed_data_line(start: Any, session: Any, line: bytes) -> None:
    up = await start(sse(frame("x"), line, frame("", "stop")))
    assert (await failure(await make(session, up.url))).kind is UpstreamFailure.STREAM


async def test_mid_stream_error(start: Any, session: Any) -> None:
    err_frame = frame("", "error", error={"code": 502, "message": "Provider disconnected"})
    up = await start(sse(frame("Hi"), err_frame, DONE))
    seen: list[Chunk] = []
    err = await failure(await make(session, up.url), seen)
    assert (err.kind, seen[0].content) == (UpstreamFailure.STREAM, "Hi")
    assert "Provider disconnected" not in err.message


async def test_chunks_before_an_in_stream_error_are_not_yielded_and_the_error_retried(
    start: Any, session: Any
) -> None:
    role = frame("", id="gen-a", role="assistant")
    err_frame = frame(None, "error", id="gen-a", error={"code": "502", "message": "try again"})
    up = await start(sse(role, err_frame), sse(frame("ok", id="gen-b"), frame("", "stop"), DONE))
    observer = Observer()
    batches = await collect(await make(session, up.url, observer))
    chunks = [chunk for batch in batches for chunk in batch]
    assert text(batches) == "ok"
    assert "gen-a" not in {c.generation_id for c in chunks}
    assert observer.retries == ["stream_502"]


@pytest.mark.parametrize("code", [400, "402", "server_error", None])
async def test_in_stream_errors_that_are_not_retried(start: Any, session: Any, code: Any) -> None:
    err_frame = frame(None, "error", error={"code": code, "message": "no"})
    up = await start(sse(err_frame), sse(frame("ok", "stop")))
    err = await failure(await make(session, up.url))
    assert (err.kind, len(up.requests)) == (UpstreamFailure.STREAM, 1)


async def test_finish_reason_error(start: Any, session: Any) -> None:
    up = await start(sse(frame("Hi"), frame("", "error"), DONE))
    assert (await failure(await make(session, up.url))).kind is UpstreamFailure.STREAM


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, UpstreamFailure.BAD_REQUEST),
        (401, UpstreamFailure.AUTH),
        (402, UpstreamFailure.PAYMENT),
        (403, UpstreamFailure.MODERATION),
        (404, UpstreamFailure.BAD_REQUEST),
        (408, UpstreamFailure.TIMEOUT),
        (422, UpstreamFailure.BAD_REQUEST),
        (429, UpstreamFailure.RATE_LIMITED),
        (500, UpstreamFailure.UNAVAILABLE),
        (502, UpstreamFailure.UNAVAILABLE),
        (503, UpstreamFailure.UNAVAILABLE),
        (504, UpstreamFailure.UNAVAILABLE),
    ],
)
async def test_status_mapping(
    start: Any, session: Any, status: int, kind: UpstreamFailure, caplog: Any
) -> None:
    up = await start(error(status, f"nope {KEY}\nTraceback (most recent call last) " + "x" * 500))
    with caplog.at_level(logging.WARNING, "services.upstream.client"):
        err = await failure(await make(session, up.url, max_retries=0))
    assert (err.kind, err.status) == (kind, status)
    assert err.message == TEXT[kind]  # the server's own sentence, never the upstream's
    assert "nope" not in err.message
    logged = caplog.text
    assert f"HTTP {status}" in logged
    assert "nope ***" in logged
    assert KEY not in logged
    assert len(logged) < 500
    assert len(up.requests) == 1


async def test_non_json_error_body(start: Any, session: Any) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502, text="<html>bad gateway</html>")

    up = await start(handler)
    err = await failure(await make(session, up.url, max_retries=0))
    assert err.kind is UpstreamFailure.UNAVAILABLE
    assert "html" not in err.message


async def test_no_api_key(start: Any, session: Any) -> None:
    up = await start(sse(frame("x", "stop")))
    client = await make(session, up.url, api_key=None)
    assert not client.configured
    assert (await failure(client)).kind is UpstreamFailure.AUTH
    assert up.requests == []
    assert (await make(session, up.url)).configured


async def test_429_with_retry_after_then_success(start: Any, session: Any) -> None:
    up = await start(error(429, "slow down", **{"Retry-After": "0"}), sse(frame("Hi", "stop")))
    observer = Observer()
    batches = await collect(await make(session, up.url, observer))
    assert text(batches) == "Hi"
    assert (len(up.requests), observer.retries, observer.statuses) == (2, ["429"], [429, 200])


async def test_503_exhausted(start: Any, session: Any) -> None:
    up = await start(error(503))
    observer = Observer()
    err = await failure(await make(session, up.url, observer))
    assert (err.kind, err.status, len(up.requests)) == (UpstreamFailure.UNAVAILABLE, 503, 3)
    assert observer.retries == ["503", "503"]


async def test_429_exhausted_sets_retry_after(start: Any, session: Any) -> None:
    up = await start(error(429))
    err = await failure(await make(session, up.url))
    assert (err.kind, len(up.requests)) == (UpstreamFailure.RATE_LIMITED, 3)
    assert err.retry_after is not None
    assert err.retry_after >= 1.0


async def test_429_with_long_retry_after_gives_up_at_once(start: Any, session: Any) -> None:
    up = await start(error(429, **{"Retry-After": "120"}))
    err = await failure(await make(session, up.url))
    assert (err.kind, err.retry_after, len(up.requests)) == (UpstreamFailure.RATE_LIMITED, 120, 1)


async def test_connection_refused(session: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    observer = Observer()
    err = await failure(await make(session, f"http://127.0.0.1:{port}/v1", observer))
    assert (err.kind, observer.retries) == (UpstreamFailure.UNAVAILABLE, ["connection"] * 2)


async def test_drop_before_first_chunk_is_retried(start: Any, session: Any) -> None:
    async def drop(request: web.Request) -> web.StreamResponse:
        resp = await sse(b": OPENROUTER PROCESSING\n\n")(request)
        assert request.transport is not None
        request.transport.close()
        return resp

    up = await start(drop, sse(frame("ok", "stop")))
    assert text(await collect(await make(session, up.url))) == "ok"
    assert len(up.requests) == 2


async def test_no_retry_after_first_chunk(start: Any, session: Any) -> None:
    async def drop(request: web.Request) -> web.StreamResponse:
        resp = await sse(frame("Hi"))(request)
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        return resp

    up = await start(drop, sse(frame("again", "stop")))
    seen: list[Chunk] = []
    err = await failure(await make(session, up.url), seen)
    assert err.kind in (UpstreamFailure.STREAM, UpstreamFailure.UNAVAILABLE)
    assert ([c.content for c in seen], len(up.requests)) == (["Hi"], 1)


def hang(up_box: list[Upstream], *frames: bytes, every: float | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = await sse(*frames)(request) if frames else web.StreamResponse()
        while every is not None and not up_box[0].release.is_set():
            await resp.write(b": OPENROUTER PROCESSING\n\n")
            await asyncio.sleep(every)
        await up_box[0].release.wait()
        return resp

    return handler


async def timed_failure(client: UpstreamClient, limit: float) -> UpstreamError:
    began = time.monotonic()
    err = await failure(client)
    assert time.monotonic() - began < limit
    return err


async def test_hang_before_headers(start: Any, session: Any) -> None:
    box: list[Upstream] = []
    box.append(await start(hang(box)))
    err = await timed_failure(await make(session, box[0].url, first_token_timeout_s=0.3), 1.5)
    assert (err.kind, len(box[0].requests)) == (UpstreamFailure.TIMEOUT, 1)


async def test_comments_do_not_count_as_first_token(start: Any, session: Any) -> None:
    box: list[Upstream] = []
    box.append(await start(hang(box, frame("", role="assistant"), every=0.05)))
    err = await timed_failure(await make(session, box[0].url, first_token_timeout_s=0.3), 1.5)
    assert err.kind is UpstreamFailure.TIMEOUT


async def test_idle_gap(start: Any, session: Any) -> None:
    box: list[Upstream] = []
    box.append(await start(hang(box, frame("Hi"))))
    err = await timed_failure(await make(session, box[0].url, idle_timeout_s=0.3), 1.5)
    assert (err.kind, len(box[0].requests)) == (UpstreamFailure.TIMEOUT, 1)


async def test_total_timeout(start: Any, session: Any) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        resp = await sse()(request)
        for _ in range(100):
            await resp.write(frame("tok"))
            await asyncio.sleep(0.05)
        return resp

    up = await start(slow)
    err = await timed_failure(await make(session, up.url, total_timeout_s=0.4), 1.5)
    assert err.kind is UpstreamFailure.TIMEOUT


@pytest.mark.parametrize("how", ["aclose", "cancel"])
async def test_stopping_closes_the_connection(start: Any, session: Any, how: str) -> None:
    closed = asyncio.Event()
    up = await start(lambda request: endless(request, closed))
    stream = (await make(session, up.url)).stream(BODY)
    got_first = asyncio.Event()

    async def consume() -> None:
        async for _ in stream:
            got_first.set()

    if how == "aclose":
        assert (await anext(stream))[0].content == "Hi"
        await asyncio.sleep(0.1)
        await stream.aclose()
    else:
        task = asyncio.create_task(consume())
        await got_first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.wait_for(closed.wait(), 1)


def testparse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    future = parse_retry_after(
        time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    )
    assert future is not None
    assert 25 < future <= 30
