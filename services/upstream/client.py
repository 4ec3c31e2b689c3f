"""Streaming chat-completions client for OpenRouter or any OpenAI-compatible API (aiohttp).

`UpstreamClient.stream` yields the chunks of one completion, one list per network read, and
raises `UpstreamError` for everything else. Retries happen only before anything was yielded.

With ``gather_s`` > 0 a read that follows the first content waits that long after its first
bytes arrived and takes everything that came meanwhile, so a fast upstream yields at most one
batch per window (the pipeline turns a batch into one ``token`` event); the first content is
never held back.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator
from contextlib import aclosing, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import aiohttp
import orjson

from services.upstream.base import Chunk, UpstreamError, UpstreamFailure
from services.upstream.deadline import ReadDeadline, sleep
from services.upstream.sse import SSEDecoder, SSEError

logger = logging.getLogger(__name__)

_ERROR_BODY_LIMIT = 64 * 1024
_MESSAGE_LIMIT = 300
_MAX_RETRY_AFTER_S = 60.0
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


_TEXT = {
    UpstreamFailure.BAD_REQUEST: "The model provider rejected the request",
    UpstreamFailure.AUTH: "The model provider rejected the server's API key",
    UpstreamFailure.PAYMENT: "The model provider account has insufficient credits",
    UpstreamFailure.MODERATION: "The model provider flagged the input",
    UpstreamFailure.TIMEOUT: "The model provider did not answer in time",
    UpstreamFailure.RATE_LIMITED: "The model provider is rate limiting requests",
    UpstreamFailure.UNAVAILABLE: "The model provider is unavailable",
    UpstreamFailure.STREAM: "The model provider's stream failed",
}
_STATUS_KIND = {
    400: UpstreamFailure.BAD_REQUEST,
    401: UpstreamFailure.AUTH,
    402: UpstreamFailure.PAYMENT,
    403: UpstreamFailure.MODERATION,
    408: UpstreamFailure.TIMEOUT,
    429: UpstreamFailure.RATE_LIMITED,
}


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    base_url: str
    api_key: str | None
    app_url: str
    app_title: str
    connect_timeout_s: float = 10
    first_token_timeout_s: float = 60
    idle_timeout_s: float = 60
    total_timeout_s: float = 900
    max_retries: int = 2
    retry_base_s: float = 0.5
    retry_max_s: float = 8.0


class UpstreamObserver(Protocol):
    def on_response(self, status: int, latency_s: float) -> None: ...
    def on_retry(self, reason: str) -> None: ...


class _NoObserver:
    def on_response(self, status: int, latency_s: float) -> None:
        pass

    def on_retry(self, reason: str) -> None:
        pass


class _Retryable(Exception):
    """A failure before anything was yielded that another attempt may fix."""

    def __init__(self, error: UpstreamError, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


class UpstreamClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: UpstreamSettings,
        observer: UpstreamObserver | None = None,
    ) -> None:
        self._session = session
        self._settings = settings
        self._observer: UpstreamObserver = observer or _NoObserver()
        self._url = f"{settings.base_url.rstrip('/')}/chat/completions"
        # Our own deadlines bound everything after connecting; never aiohttp's 300 s total.
        connect = settings.connect_timeout_s
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect)

    @property
    def configured(self) -> bool:
        return bool(self._settings.api_key)

    async def start(self) -> None:
        pass  # the session is the app's (server/lifecycle.py)

    async def aclose(self) -> None:
        pass

    async def stream(
        self, body: dict[str, Any], *, gather_s: float = 0.0
    ) -> AsyncGenerator[list[Chunk], None]:
        s = self._settings
        if not s.api_key:
            raise UpstreamError(UpstreamFailure.AUTH, "No upstream API key is configured")
        data = orjson.dumps({**body, "stream": True, "usage": {"include": True}})
        headers = {
            "Authorization": f"Bearer {s.api_key}",
            "HTTP-Referer": s.app_url,
            "X-Title": s.app_title,
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
        }
        loop = asyncio.get_running_loop()
        total_deadline = loop.time() + s.total_timeout_s
        attempt = 0
        while True:
            first_deadline = min(total_deadline, loop.time() + s.first_token_timeout_s)
            try:
                resp = await self._open(data, headers, first_deadline)
                reader = self._read(resp, first_deadline, total_deadline, gather_s)
                async with resp, aclosing(reader) as batches:
                    async for batch in batches:
                        yield batch
                return
            except _Retryable as exc:
                delay = self._retry_delay(exc.error, attempt, total_deadline)
                if delay is None:
                    raise exc.error from exc.__cause__
                logger.debug("upstream retry %d in %.2fs: %s", attempt + 1, delay, exc.reason)
                self._observer.on_retry(exc.reason)
                attempt += 1
            await asyncio.sleep(delay)

    async def _open(
        self, data: bytes, headers: dict[str, str], deadline: float
    ) -> aiohttp.ClientResponse:
        """Send the request; return a 200 response or raise."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        try:
            async with asyncio.timeout_at(deadline):
                resp = await self._session.post(
                    self._url, data=data, headers=headers, timeout=self._timeout
                )
        except aiohttp.ServerTimeoutError as exc:  # aiohttp's connect timeout
            raise _Retryable(_error(UpstreamFailure.TIMEOUT), "connect_timeout") from exc
        except TimeoutError as exc:  # our first-token or total deadline, waiting for headers
            raise _error(UpstreamFailure.TIMEOUT) from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise _Retryable(_error(UpstreamFailure.UNAVAILABLE), "connection") from exc
        except aiohttp.ClientError as exc:
            raise _error(UpstreamFailure.UNAVAILABLE) from exc
        latency = loop.time() - sent
        logger.debug("upstream response status=%d latency=%.3fs", resp.status, latency)
        self._observer.on_response(resp.status, latency)
        if resp.status == 200:
            return resp
        try:
            error = await self._http_error(resp, deadline)
        finally:
            resp.close()
        if resp.status in _RETRY_STATUSES:
            raise _Retryable(error, str(resp.status))
        raise error

    async def _http_error(self, resp: aiohttp.ClientResponse, deadline: float) -> UpstreamError:
        body = bytearray()
        try:
            async with asyncio.timeout_at(deadline):
                while len(body) < _ERROR_BODY_LIMIT:
                    part = await resp.content.read(_ERROR_BODY_LIMIT - len(body))
                    if not part:
                        break
                    body += part
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass  # the status alone is enough
        status = resp.status
        other = UpstreamFailure.BAD_REQUEST if 400 <= status < 500 else UpstreamFailure.UNAVAILABLE
        kind = _STATUS_KIND.get(status, other)
        detail = None
        with suppress(orjson.JSONDecodeError):
            detail = _error_detail(orjson.loads(body))
        retry_after = _parse_retry_after(resp.headers.get("Retry-After"))
        return _error(kind, detail, self._settings.api_key, status=status, retry_after=retry_after)

    async def _read(
        self,
        resp: aiohttp.ClientResponse,
        first_deadline: float,
        total_deadline: float,
        gather_s: float,
    ) -> AsyncGenerator[list[Chunk], None]:
        """Yield the chunks of each read of a 200 response until the stream ends."""
        loop = asyncio.get_running_loop()
        idle = self._settings.idle_timeout_s
        decoder = SSEDecoder()
        watchdog = ReadDeadline(loop)
        content = resp.content
        started = finished = done = consumed = yielded = False
        try:
            while not done:
                deadline = min(total_deadline, loop.time() + idle) if started else first_deadline
                watchdog.arm(deadline)
                try:
                    raw = await content.readany()
                    if raw and gather_s and started:
                        await sleep(loop, gather_s)  # let the window fill
                        more = content.read_nowait()
                        if more:
                            raw += more
                except asyncio.CancelledError:
                    if watchdog.expired():
                        raise _error(UpstreamFailure.TIMEOUT) from None
                    raise
                except (aiohttp.ClientError, OSError) as exc:  # the body broke off
                    if yielded:
                        raise _error(UpstreamFailure.STREAM, "connection lost") from exc
                    raise _Retryable(_error(UpstreamFailure.UNAVAILABLE), "connection") from exc
                finally:
                    watchdog.disarm()
                try:
                    events = decoder.feed(raw) if raw else decoder.close()
                except SSEError as exc:
                    raise _error(UpstreamFailure.STREAM, "malformed stream") from exc
                consumed = not raw
                chunks: list[Chunk] = []
                failure: UpstreamError | None = None
                for payload in events:
                    if payload.strip() == b"[DONE]":
                        done = True
                        break
                    try:
                        chunk = self._chunk(payload)
                    except UpstreamError as exc:
                        failure = exc
                        break
                    chunks.append(chunk)
                    started = started or bool(chunk.content or chunk.finish_reason)
                    finished = finished or chunk.finish_reason is not None
                if chunks:
                    yielded = True
                    yield chunks
                if failure is not None:
                    raise failure
                if consumed and not done:
                    if finished:
                        return
                    raise _error(UpstreamFailure.STREAM, "upstream stream ended before finishing")
        finally:
            watchdog.close()
            if not consumed and not content.at_eof():
                resp.close()  # stop the generation upstream: drop the connection

    def _chunk(self, payload: bytes) -> Chunk:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise _error(UpstreamFailure.STREAM, "malformed data line") from None
        if not isinstance(obj, dict):
            raise _error(UpstreamFailure.STREAM, "malformed data line")
        content, finish = "", None
        choices = obj.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            delta = choices[0].get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                content = delta["content"]
            if isinstance(choices[0].get("finish_reason"), str):
                finish = choices[0]["finish_reason"]
        if "error" in obj or finish == "error":
            detail = _error_detail(obj) or "the model reported an error"
            raise _error(UpstreamFailure.STREAM, detail, self._settings.api_key)
        model = obj.get("model")
        usage = obj.get("usage")
        return Chunk(
            content=content,
            finish_reason=finish,
            model=model if isinstance(model, str) else None,
            usage=usage if isinstance(usage, dict) else None,
            raw=obj,
        )

    def _retry_delay(self, error: UpstreamError, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before the next attempt, or None to give up (and finish `error`)."""
        s = self._settings
        ceiling = min(s.retry_max_s, s.retry_base_s * 2**attempt)
        given = error.retry_after if error.status in _RETRY_STATUSES else None
        delay = given if given is not None else random.uniform(0, ceiling)
        if (
            attempt >= s.max_retries
            or delay > _MAX_RETRY_AFTER_S
            or asyncio.get_running_loop().time() + delay >= deadline
        ):
            if error.kind is UpstreamFailure.RATE_LIMITED and error.retry_after is None:
                error.retry_after = max(1.0, ceiling)
            return None
        return delay


def _error(
    kind: UpstreamFailure,
    detail: str | None = None,
    secret: str | None = None,
    *,
    status: int | None = None,
    retry_after: float | None = None,
) -> UpstreamError:
    message = _TEXT[kind]
    if detail:
        if secret:
            detail = detail.replace(secret, "***")
        detail = detail[:_MESSAGE_LIMIT]
        message = f"{message}: {detail}"
    return UpstreamError(kind, message, status=status, retry_after=retry_after)


def _error_detail(obj: object) -> str | None:
    """`error.message` (or a bare `error` string) of an upstream JSON object."""
    if not isinstance(obj, dict):
        return None
    error = obj.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    return error if isinstance(error, str) else None


def _parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
