"""A tiny OpenAI-compatible upstream on a loopback port, and the helpers the upstream
client's tests share (``test_upstream.py``, ``test_upstream_coalescing.py``; their fixtures
``start`` and ``session`` are in ``conftest.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from services.upstream.client import Chunk, UpstreamClient, UpstreamError, UpstreamSettings

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


async def endless(request: web.Request, closed: asyncio.Event) -> web.StreamResponse:
    try:
        resp = await sse(frame("Hi"))(request)
        while True:
            await asyncio.sleep(0.02)
            await resp.write(frame("more"))
    finally:
        closed.set()
