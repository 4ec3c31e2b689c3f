"""Token coalescing at the read (``gather_s``): the first content at once, the rest in
windows; a busy stream's window with its socket paused (``ResponseReader._gather_paused``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from bench.procs import syscalls
from services.upstream.client import Chunk, UpstreamClient, UpstreamFailure
from tests.unit.upstream_server import (
    BODY,
    DONE,
    Handler,
    Upstream,
    endless,
    failure,
    frame,
    make,
    sse,
    upstreams,
)


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


# -- TOKEN_COALESCE_BUSY_MS: a busy stream's window has its own length ------------------------


async def test_a_busy_streams_windows_last_busy_gather_s(start: Any, session: Any) -> None:
    """x, then q0..q5 40 ms apart, after the stream went busy: 0.1 s windows would cut them
    in two or more batches, the 0.4 s busy window takes them in one."""

    async def spaced(request: web.Request, resp: web.StreamResponse) -> None:
        for i in range(6):
            await asyncio.sleep(0.04)
            await resp.write(frame(f"q{i}"))
        await asyncio.sleep(0.4)
        await resp.write(frame(None, "stop") + DONE)

    up = await start(busy_then(spaced))
    client = await make(session, up.url)
    batches = [contents(b) async for b in client.stream(BODY, gather_s=0.1, busy_gather_s=0.4)]
    batches = [b for b in batches if b]
    assert batches[:2] == [["c0"], [f"b{i}" for i in range(6)]]  # not busy yet: gather_s
    assert batches[2:] == [["x", *(f"q{i}" for i in range(6))]]


async def test_a_stream_at_a_models_pace_keeps_gather_s(start: Any, session: Any) -> None:
    """Deltas 0.15 s apart never fill a 0.1 s window with several chunks: each is its own
    batch, however long the busy window."""
    deltas = [f"d{i}" for i in range(4)]
    frames = [frame("", role="assistant"), *(frame(d) for d in deltas), frame(None, "stop"), DONE]
    up = await start(paced(*frames, gap_s=0.15))
    client = await make(session, up.url)
    batches = [contents(b) async for b in client.stream(BODY, gather_s=0.1, busy_gather_s=2.0)]
    assert [b for b in batches if b] == [[d] for d in deltas]
