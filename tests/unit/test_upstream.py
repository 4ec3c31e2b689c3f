from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from bench.procs import syscalls
from services.upstream.client import (
    Chunk,
    UpstreamClient,
    UpstreamError,
    UpstreamFailure,
    UpstreamSettings,
)
from services.upstream.failures import TEXT, parse_retry_after

KEY = "sk-or-test-secret-key"
BODY = {"model": "test/model", "messages": [{"role": "user", "content": "hi"}]}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def frame(content: str | None = None, finish: str | None = None, **extra: Any) -> bytes:
    choice: dict[str, Any] = {"index": 0, "delta": {"content": content}, "finish_reason": finish}
    obj = {"id": "gen-1", "model": "test/model", "choices": [choice], **extra}
    return b"data: " + orjson.dumps(obj) + b"\n\n"


DONE = b"data: [DONE]\n\n"
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"cost":0.1}}\n\n'


class Upstream:
    """A tiny OpenAI-compatible server; request n goes to handler n (the last one repeats)."""

    def __init__(self, *handlers: Handler) -> None:
        self.handlers = handlers
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.release = asyncio.Event()  # set at teardown: hanging handlers return
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((dict(request.headers), orjson.loads(await request.read())))
        return await self.handlers[min(len(self.requests), len(self.handlers)) - 1](request)


class Observer:
    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.retries: list[str] = []

    def on_response(self, status: int, latency_s: float) -> None:
        self.statuses.append(status)

    def on_retry(self, reason: str) -> None:
        self.retries.append(reason)


@contextlib.asynccontextmanager
async def upstreams() -> AsyncIterator[Callable[..., Awaitable[Upstream]]]:
    """``start(*handlers)`` serves an ``Upstream`` on a loopback port; all stop on exit."""
    servers: list[tuple[Upstream, web.AppRunner]] = []

    async def start(*handlers: Handler) -> Upstream:
        upstream = Upstream(*handlers)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", upstream.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        upstream.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/"
        servers.append((upstream, runner))
        return upstream

    try:
        yield start
    finally:
        for upstream, runner in servers:
            upstream.release.set()
            await runner.cleanup()


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Awaitable[Upstream]]]:
    async with upstreams() as start:
        yield start


@pytest.fixture
async def session() -> AsyncIterator[list[UpstreamClient]]:
    """The clients a test made (``make``); closed at teardown."""
    made: list[UpstreamClient] = []
    yield made
    for client in made:
        await client.aclose()


async def make(
    session: list[UpstreamClient], url: str, observer: Observer | None = None, **overrides: Any
) -> UpstreamClient:
    settings = UpstreamSettings(
        base_url=url,
        api_key=KEY,
        app_url="https://relay.test",
        app_title="Relay Test",
        connect_timeout_s=1,
        first_token_timeout_s=2,
        idle_timeout_s=2,
        total_timeout_s=10,
        max_retries=2,
        retry_base_s=0.01,
        retry_max_s=0.05,
    )
    client = UpstreamClient(dataclasses.replace(settings, **overrides), observer)
    await client.start()
    session.append(client)
    return client


async def collect(client: UpstreamClient) -> list[list[Chunk]]:
    return [batch async for batch in client.stream(BODY)]


async def drain(client: UpstreamClient, seen: list[Chunk]) -> None:
    async for batch in client.stream(BODY):
        seen += batch


async def failure(client: UpstreamClient, seen: list[Chunk] | None = None) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await drain(client, [] if seen is None else seen)
    assert KEY not in info.value.message
    return info.value


def sse(*frames: bytes, status: int = 200) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=status, headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for data in frames:
            await resp.write(data)
        return resp

    return handler


def error(status: int, message: str = "upstream says no", **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = {"error": {"code": status, "message": message}}
        return web.json_response(body, status=status, headers=headers)

    return handler


def text(batches: list[list[Chunk]]) -> str:
    return "".join(chunk.content for batch in batches for chunk in batch)


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


async def endless(request: web.Request, closed: asyncio.Event) -> web.StreamResponse:
    try:
        resp = await sse(frame("Hi"))(request)
        while True:
            await asyncio.sleep(0.02)
            await resp.write(frame("more"))
    finally:
        closed.set()


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


# -- gather_s: token coalescing at the read ------------------------------------------------


def paced(*frames: bytes, gap_s: float) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = await sse()(request)
        for data in frames:
            await resp.write(data)
            await asyncio.sleep(gap_s)
        return resp

    return handler


def contents(batch: list[Chunk]) -> list[str]:
    return [chunk.content for chunk in batch if chunk.content]


async def test_reads_after_the_first_content_gather_the_window(start: Any, session: Any) -> None:
    deltas = [f"d{i} " for i in range(6)]
    frames = [frame("", role="assistant"), *(frame(d) for d in deltas), frame(None, "stop"), DONE]
    up = await start(paced(*frames, gap_s=0.005))
    client = await make(session, up.url)
    batches = [b async for b in client.stream(BODY, gather_s=0.5)]
    with_content = [contents(b) for b in batches if contents(b)]
    assert with_content[0] == ["d0 "]  # the first content is yielded at once
    assert len(with_content) == 2  # the rest arrived within one 0.5 s window
    assert [c for group in with_content for c in group] == deltas
    assert batches[-1][-1].finish_reason == "stop"


async def test_a_stream_that_ends_inside_a_window_ends_cleanly(start: Any, session: Any) -> None:
    up = await start(sse(frame("a"), frame("b"), frame("c", "stop"), DONE))
    batches = [b async for b in (await make(session, up.url)).stream(BODY, gather_s=0.2)]
    assert "".join(c.content for b in batches for c in b) == "abc"


async def test_cancel_during_a_window_closes_the_connection(start: Any, session: Any) -> None:
    closed = asyncio.Event()
    up = await start(lambda request: endless(request, closed))
    got_first = asyncio.Event()

    async def consume() -> None:
        async for _batch in (await make(session, up.url)).stream(BODY, gather_s=5):
            got_first.set()

    task = asyncio.create_task(consume())
    await got_first.wait()
    await asyncio.sleep(0.1)  # inside the 5 s window
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.wait_for(closed.wait(), 1)


# -- a busy stream's window: the socket is not read until the window ends ----------------------

TRICKLE_FRAMES = 60  # written 2 ms apart inside one paused window: one segment each


def read_calls() -> int:
    """Read-family system calls of this process so far (``/proc/self/io``)."""
    return syscalls(os.getpid())[0]


async def busy_start(request: web.Request, *, settle_s: float) -> web.StreamResponse:
    """c0 alone, then b0..b5 at once, then ``settle_s`` for their 0.2 s window to end: from
    there the stream counts as busy and its next window is paused."""
    resp = await sse(frame("", role="assistant"), frame("c0"))(request)
    await asyncio.sleep(0.05)
    await resp.write(b"".join(frame(f"b{i}") for i in range(6)))
    await asyncio.sleep(settle_s)
    return resp


def busy_then_trickle(marks: dict[str, int]) -> Handler:
    """c0 alone, then six deltas at once (a busy window), then p0..p59 one segment each,
    2 ms apart, then a long pause before the finish."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = await busy_start(request, settle_s=0.4)
        marks["before"] = read_calls()
        for i in range(TRICKLE_FRAMES):
            await resp.write(frame(f"p{i}"))
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.4)
        marks["after"] = read_calls()
        await resp.write(frame(None, "stop") + DONE)
        return resp

    return handler


async def busy_stream(up_start: Callable[..., Awaitable[Upstream]], made: list[Any]) -> Any:
    marks: dict[str, int] = {}
    up = await up_start(busy_then_trickle(marks))
    client = await make(made, up.url)
    batches = [contents(b) async for b in client.stream(BODY, gather_s=0.2)]
    return [b for b in batches if b], marks["after"] - marks["before"]


def assert_one_batch_per_window(batches: list[list[str]]) -> None:
    assert batches[0] == ["c0"]  # the first content at once
    assert batches[1] == [f"b{i}" for i in range(6)]
    # p0..p59 came within one window after p0 (about 0.12 s of a 0.2 s window): one batch
    assert batches[2:] == [[f"p{i}" for i in range(TRICKLE_FRAMES)]]


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="counts reads in /proc/self/io")
async def test_a_paused_window_still_gets_everything_that_came_in_it(
    start: Any, session: Any
) -> None:
    """asyncio's loop: the resumed socket's bytes arrive two loop turns later (its socket
    reads are recv() calls, which /proc/self/io does not count: the uvloop test below does)."""
    batches, _reads = await busy_stream(start, session)
    assert_one_batch_per_window(batches)


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="counts reads in /proc/self/io")
def test_a_busy_window_reads_its_socket_once_at_its_end_on_uvloop() -> None:
    """The server's loop (uvloop, whose socket reads are read() calls): the 60 segments of a
    paused window cost a couple of reads, not 60, and the window still gets them all."""
    import uvloop

    async def main() -> tuple[list[list[str]], int]:
        made: list[UpstreamClient] = []
        async with upstreams() as start:
            try:
                result: tuple[list[list[str]], int] = await busy_stream(start, made)
                return result
            finally:
                for client in made:
                    await client.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        batches, reads = runner.run(main())
    assert_one_batch_per_window(batches)
    assert reads < TRICKLE_FRAMES / 4, reads


def busy_then(after: Callable[[web.Request, web.StreamResponse], Awaitable[None]]) -> Handler:
    """c0, then six deltas at once (the next window is paused), then ``after``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = await busy_start(request, settle_s=0.3)
        await resp.write(frame("x"))  # opens the paused window
        await after(request, resp)
        return resp

    return handler


async def test_a_connection_cut_inside_a_paused_window_is_a_stream_failure(
    start: Any, session: Any
) -> None:
    async def cut(request: web.Request, resp: web.StreamResponse) -> None:
        await asyncio.sleep(0.05)  # inside the paused window
        await resp.write(frame("y"))
        assert request.transport is not None
        request.transport.abort()  # no [DONE], no finish: a reset connection

    up = await start(busy_then(cut))
    seen: list[Chunk] = []
    err = await failure(await make(session, up.url), seen)
    assert err.kind is UpstreamFailure.STREAM
    # what came before the cut, even inside the paused window, was read and yielded
    assert "".join(c.content for c in seen) == "c0" + "".join(f"b{i}" for i in range(6)) + "xy"


async def test_cancel_inside_a_paused_window_closes_the_connection(
    start: Any, session: Any
) -> None:
    closed = asyncio.Event()

    async def forever(request: web.Request, resp: web.StreamResponse) -> None:
        try:
            while True:
                await asyncio.sleep(0.01)
                await resp.write(frame("more"))
        finally:
            closed.set()

    up = await start(busy_then(forever))
    batches: list[list[Chunk]] = []

    async def consume() -> None:
        async for batch in (await make(session, up.url)).stream(BODY, gather_s=0.2):
            batches.append(batch)

    task = asyncio.create_task(consume())
    # b0..b5's window ends at ~0.25 s; from then on each 0.2 s window (about 20 frames) is
    # paused, back to back: at 0.75 s the reader is inside one
    await asyncio.sleep(0.75)
    assert len(batches) >= 3  # busy windows came,
    assert len(batches[-1]) >= 4  # each whole
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.wait_for(closed.wait(), 1)
