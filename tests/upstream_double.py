"""A real HTTP server standing in for OpenRouter (or any OpenAI-compatible API) in tests.

    async with UpstreamDouble() as up:           # 127.0.0.1, a free port
        settings = Settings(openrouter_base_url=up.base_url, ...)
        ...                                       # model "double/http_429_then_ok" etc.
        rec = await up.wait_for_request()
        await cancel_the_stream()
        assert await up.wait_closed(rec) < 1.0 and rec.closed_by_client

Scenario selection: a request whose ``model`` is ``double/<name>`` gets ``up.scenarios[name]``
(``SCENARIOS`` plus any a test adds); any other model gets the default scenario.

The standard scenarios (tests/upstream_scenarios.py has their texts and constants):

- ``normal`` (the default), ``comments``, ``split_utf8``, ``crlf``, ``crlf_split``,
  ``no_done``, ``length``, ``echo`` (``"echo: <last user text>"``), ``slow`` (50 tokens,
  0.2 s apart), ``xss``, ``markdown``: complete streams of ``NORMAL_TEXT`` or their text.
- protocol v2: ``reasoning`` (``delta.reasoning`` with ``reasoning.text`` details, then
  the answer), ``reasoning_content`` (the same text as ``delta.reasoning_content``, as
  DeepSeek/vLLM/LiteLLM send it), ``reasoning_encrypted`` (one ``ENCRYPTED_DETAIL``, no
  reasoning text), ``slow_thinker`` (reasoning deltas for ``SLOW_THINKER_S`` = 6 s, then the
  answer), ``tool_calls_parallel`` (``PARALLEL_TOOL_PIECES``: two calls, indexes interleaved,
  no text, ``finish_reason: "tool_calls"``; they assemble to ``PARALLEL_TOOL_CALLS``),
  ``error_null`` (every chunk has ``"error": null``), ``done_linger`` (the body ends
  0.2 s after ``[DONE]``, as behind a proxy: a client must read to the end to reuse the
  connection), ``stream_429_then_ok`` (the first
  request gets an in-stream error ``{"code": "429", ...}`` before any delta, later ones
  stream normally), ``stream_429`` (always that error), ``usage_details``
  (``DETAILED_USAGE``: cost, cached and reasoning tokens), ``traceback`` (HTTP 400 whose
  message is a gateway's Python traceback).
- failures: ``hang``, ``stall_first_token``, ``eof_no_finish``, ``mid_stream_error``,
  ``truncated``, ``malformed``, ``stall_mid_stream`` (``PARTIAL_SENT`` first), ``http_<status>``
  for 400 401 402 403 408 429 502 503, ``http_429_no_retry_after``, ``http_429_then_ok``,
  ``http_503_then_ok``.

``UpstreamDouble(dialect="openai")`` behaves as a strict OpenAI-compatible server: a request
with a field outside ``OPENAI_FIELDS`` (e.g. ``usage``, ``models``, ``provider``) gets HTTP
400 naming it, and the usage chunk is sent only when ``stream_options.include_usage`` is
true.  ``up.connections`` counts the TCP connections that carried requests (one, for several
sequential chats of a client that reuses its connections).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from tests.upstream_scenarios import (
    COMMENT,
    ERROR_MESSAGES,
    OPENAI_FIELDS,
    SCENARIOS,
    ChunkFactory,
    Scenario,
    last_user_text,
    make_usage,
    prompt_tokens,
    split_points,
    sse,
)

__all__ = ["SCENARIOS", "Recorded", "Scenario", "UpstreamDouble"]

POLL_S = 0.02  # how often waits check whether the client went away
SPLIT_PAUSE_S = 0.01  # between the pieces of a split write, so they arrive in separate reads
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
EXTRA_MODELS = ["openrouter/auto", "openai/gpt-4o-mini", "anthropic/claude-3.5-sonnet"]


class _Stopping(Exception):
    """The double is shutting down; the handler drops the connection."""


@dataclass
class Recorded:
    """One ``/chat/completions`` exchange as the double saw it."""

    body: dict[str, Any]
    headers: dict[str, str]  # keys lower-cased: rec.headers["authorization"]
    received_at: float  # time.monotonic()
    scenario: str = ""
    closed_by_client: bool = False  # the client went away before we finished
    closed_at: float | None = None  # time.monotonic() when the exchange ended, either way
    completed: bool = False  # we wrote the scenario's whole response
    sent_text: str = ""  # delta content actually written
    status: int = 200

    @property
    def model(self) -> Any:
        return self.body.get("model")

    @property
    def ended(self) -> bool:
        return self.closed_at is not None


@dataclass
class _Exchange:
    request: web.Request
    rec: Recorded
    scenario: Scenario
    stream: web.StreamResponse = field(default_factory=web.StreamResponse)


class UpstreamDouble:
    """OpenRouter's chat and models endpoints on ``127.0.0.1:<free port>``."""

    def __init__(
        self,
        *,
        default: Scenario | None = None,
        dialect: Literal["openrouter", "openai"] = "openrouter",
    ) -> None:
        self.default = default or SCENARIOS["normal"]
        self.dialect = dialect
        self.scenarios: dict[str, Scenario] = dict(SCENARIOS)
        self.requests: list[Recorded] = []
        self.model_requests = 0  # GET /models count
        self.models_status = 200  # set to e.g. 503 to fail GET /models
        self.require_api_key: str | None = None  # when set, other bearer keys get 401
        self.base_url = ""
        self._peers: set[Any] = set()  # (host, port) of each client connection
        self._counts: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()
        self._stopping = False
        self._ids = itertools.count(1)

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/v1/chat/completions", self._chat)
        app.router.add_get("/api/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/api/v1"

    async def stop(self) -> None:
        self._stopping = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> UpstreamDouble:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- test API -------------------------------------------------------------------

    def set_default(self, scenario: Scenario) -> None:
        self.default = scenario

    @property
    def connections(self) -> int:
        """TCP connections that carried at least one request (chat or models)."""
        return len(self._peers)

    def reset(self) -> None:
        """Forget recorded requests and the per-scenario counters (``fail_times``)."""
        self.requests.clear()
        self._counts.clear()

    async def wait_for_request(self, n: int = 1, timeout: float = 5) -> Recorded:
        """Wait until at least ``n`` requests arrived; return the ``n``-th (1-based)."""
        await self._wait(lambda: len(self.requests) >= n, timeout, f"request #{n}")
        return self.requests[n - 1]

    async def wait_closed(
        self, rec: Recorded, timeout: float = 5, *, since: float | None = None
    ) -> float:
        """Wait until ``rec``'s exchange ended (client close or our own end).

        Returns ``rec.closed_at - since`` in seconds, where ``since`` (a ``time.monotonic()``
        value) defaults to the moment of this call, so ``cancel(); await wait_closed(rec)``
        measures how fast the client closed. Never negative. Check ``rec.closed_by_client``
        to tell a client close from a completed response.
        """
        start = time.monotonic() if since is None else since
        await self._wait(lambda: rec.closed_at is not None, timeout, "the exchange to end")
        assert rec.closed_at is not None
        return max(0.0, rec.closed_at - start)

    async def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [(r.scenario, r.closed_by_client, r.completed) for r in self.requests]
                raise TimeoutError(f"upstream double: no {what} after {timeout}s; saw {seen}")
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                continue

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- handlers -------------------------------------------------------------------

    def _seen(self, request: web.Request) -> None:
        if request.transport is not None:
            self._peers.add(request.transport.get_extra_info("peername"))

    async def _models(self, request: web.Request) -> web.Response:
        self._seen(request)
        self.model_requests += 1
        if self.models_status != 200:
            return _error_response(self.models_status)
        ids = [f"double/{name}" for name in self.scenarios] + EXTRA_MODELS
        data = [{"id": i, "name": i, "context_length": 128000, "created": 0} for i in ids]
        for model in data:
            model["pricing"] = {"prompt": "0.000001", "completion": "0.000002"}
        return web.json_response({"data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        try:
            body = await request.json()
        except ValueError:
            return _error_response(400, "Request body is not valid JSON")
        if not isinstance(body, dict):
            return _error_response(400, "Request body must be a JSON object")
        headers = {k.lower(): v for k, v in request.headers.items()}
        rec = Recorded(body=body, headers=headers, received_at=time.monotonic())
        self.requests.append(rec)
        self._notify()
        try:
            return await self._dispatch(request, rec, body, headers)
        finally:
            rec.closed_at = time.monotonic()
            self._notify()

    async def _dispatch(
        self, request: web.Request, rec: Recorded, body: dict[str, Any], headers: dict[str, str]
    ) -> web.StreamResponse:
        model = body.get("model")
        scenario = self.default
        if isinstance(model, str) and model.startswith("double/"):
            name = model.removeprefix("double/")
            if name not in self.scenarios:
                rec.scenario, rec.status = name, 400
                return _error_response(400, f"unknown upstream double scenario {name!r}")
            scenario = self.scenarios[name]
        rec.scenario = scenario.name
        unknown = sorted(set(body) - OPENAI_FIELDS) if self.dialect == "openai" else []
        if unknown:
            rec.status = 400
            message = f"Unrecognized request argument supplied: {', '.join(unknown)}"
            return _error_response(400, message)
        if self.require_api_key and headers.get("authorization") != (
            f"Bearer {self.require_api_key}"
        ):
            rec.status = 401
            return _error_response(401)
        ex = _Exchange(request, rec, scenario)
        try:
            response = await self._serve(ex)
        except ConnectionResetError:
            rec.closed_by_client = True
            return ex.stream  # aiohttp ignores the failing write_eof on a closed transport
        except _Stopping:
            _drop(request)
            return ex.stream
        rec.completed = True
        return response

    async def _serve(self, ex: _Exchange) -> web.StreamResponse:
        sc, rec, body = ex.scenario, ex.rec, ex.rec.body
        self._counts[sc.name] = count = self._counts.get(sc.name, 0) + 1
        await self._pause(ex, sc.hang_s)
        failing = sc.fail_times is None or count <= sc.fail_times
        if sc.status != 200 and failing:
            rec.status = sc.status
            return _error_response(sc.status, sc.error_message, sc.error_metadata, sc.retry_after)
        text = f"echo: {last_user_text(body)}" if sc.echo else None
        tokens = sc.tokens_to_send(text)
        model = sc.model or str(body.get("model") or "double/default")
        gen_id = f"gen-{next(self._ids)}-double"
        chunks = ChunkFactory(gen_id, model, sc.provider, null_error=sc.null_error)
        usage = sc.usage or make_usage(prompt_tokens(body), len(tokens))
        if body.get("stream") is False:
            return web.json_response(chunks.completion("".join(tokens), sc.finish_reason, usage))

        ex.stream.headers.update(SSE_HEADERS)
        await ex.stream.prepare(ex.request)
        if sc.comments:
            await self._write(ex, COMMENT)
        await self._pause(ex, sc.first_token_delay_s)
        if sc.stream_error is not None and failing:
            await self._write(ex, sse(chunks.stream_error(sc.stream_error)))
            return ex.stream
        await self._reasoning(ex, chunks)
        for i, token in enumerate(tokens):
            if i:
                await self._pause(ex, sc.delay_s)
                if sc.comments:
                    await self._write(ex, COMMENT)
            await self._write(ex, sse(chunks.content(token)))
            rec.sent_text += token
        for piece in sc.tool_calls or []:
            await self._write(ex, sse(chunks.delta({"tool_calls": [piece]})))
        await self._finish(ex, chunks, usage)
        return ex.stream

    async def _reasoning(self, ex: _Exchange, chunks: ChunkFactory) -> None:
        sc = ex.scenario
        for i, piece in enumerate(sc.reasoning or []):
            if i:
                await self._pause(ex, sc.reasoning_delay_s)
            event = chunks.reasoning(piece, sc.reasoning_field, sc.reasoning_format)
            await self._write(ex, sse(event))
        for detail in sc.reasoning_details or []:
            await self._write(ex, sse(chunks.delta({"reasoning_details": [detail]})))

    def _sends_usage(self, ex: _Exchange) -> bool:
        if not ex.scenario.include_usage:
            return False
        if self.dialect == "openai":  # only when asked, the standard way
            options = ex.rec.body.get("stream_options")
            return isinstance(options, dict) and options.get("include_usage") is True
        return True

    async def _finish(self, ex: _Exchange, chunks: ChunkFactory, usage: dict[str, Any]) -> None:
        sc = ex.scenario
        if sc.end in ("done", "no_done"):
            await self._write(ex, sse(chunks.content("", sc.finish_reason)))
            if sc.comments:
                await self._write(ex, COMMENT)
            if self._sends_usage(ex):
                await self._write(ex, sse(chunks.usage(usage)))
            if sc.end == "done":
                await self._write(ex, sse("[DONE]"))
                await self._pause(ex, sc.linger_s)
        elif sc.end == "error":
            await self._write(ex, sse(chunks.error()))
        elif sc.end == "malformed":
            await self._write(ex, "data: {not json\n\n")
        elif sc.end == "truncated":
            _drop(ex.request)  # flushes what was written, then closes mid-body
        elif sc.end == "stall":
            await self._pause(ex, math.inf)
        # "eof": a clean end of the body with no finish_reason and no [DONE]

    # --- I/O helpers ----------------------------------------------------------------

    def _check(self, ex: _Exchange) -> None:
        if self._stopping:
            raise _Stopping
        transport = ex.request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")

    async def _pause(self, ex: _Exchange, seconds: float) -> None:
        """Sleep (``inf``: forever), noticing a client close within ``POLL_S``."""
        deadline = time.monotonic() + seconds
        while True:
            self._check(ex)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(POLL_S, remaining))

    async def _write(self, ex: _Exchange, event: str) -> None:
        if ex.scenario.crlf:
            event = event.replace("\n", "\r\n")
        data = event.encode()
        pieces = split_points(data) if ex.scenario.split_bytes else [data]
        for i, piece in enumerate(pieces):
            if i:
                await self._pause(ex, SPLIT_PAUSE_S)
            self._check(ex)
            await ex.stream.write(piece)


def _drop(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


def _error_response(
    status: int,
    message: str | None = None,
    metadata: dict[str, Any] | None = None,
    retry_after: str | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message or ERROR_MESSAGES.get(status)}
    if metadata:
        error["metadata"] = metadata
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return web.json_response({"error": error}, status=status, headers=headers)
