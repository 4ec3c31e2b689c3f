"""Streaming chat-completions client for OpenRouter or any OpenAI-compatible API (aiohttp).

``UpstreamClient`` owns its ``aiohttp.ClientSession`` (``start()`` opens it, ``aclose()``
closes it).  ``stream`` sends one request in the client's ``Dialect`` and yields the chunks
of the answer, one list per network read (``services.upstream.reader``), raising
``UpstreamError`` for everything else.  Retries (429/5xx, connection failures, an in-stream
429/502/503) happen only before anything was yielded.  ``list_models`` reads ``GET /models``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson

from services.upstream.base import (
    OPENROUTER_ONLY_FIELDS,
    Chunk,
    Dialect,
    ModelInfo,
    UpstreamError,
    UpstreamFailure,
)
from services.upstream.catalogue import fetch_model_list
from services.upstream.failures import (
    RETRY_STATUSES,
    Retryable,
    error_detail,
    failure,
    kind_for_status,
    log_detail,
    parse_retry_after,
)
from services.upstream.reader import ResponseReader

__all__ = [
    "Chunk",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamFailure",
    "UpstreamObserver",
    "UpstreamSettings",
    "wire_body",
]

logger = logging.getLogger(__name__)

_ERROR_BODY_LIMIT = 64 * 1024
_MAX_RETRY_AFTER_S = 60.0


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    base_url: str
    api_key: str | None
    app_url: str
    app_title: str
    dialect: Dialect = Dialect.OPENROUTER
    connect_timeout_s: float = 10
    first_token_timeout_s: float = 60
    idle_timeout_s: float = 60
    total_timeout_s: float = 900
    max_retries: int = 2
    retry_base_s: float = 0.5
    retry_max_s: float = 8.0
    max_connections: int = 1000  # aiohttp's default 100 would queue chats
    models_timeout_s: float = 10


class UpstreamObserver(Protocol):
    def on_response(self, status: int, latency_s: float) -> None: ...
    def on_retry(self, reason: str) -> None: ...


class _NoObserver:
    def on_response(self, status: int, latency_s: float) -> None:
        pass

    def on_retry(self, reason: str) -> None:
        pass


def wire_body(body: dict[str, Any], dialect: Dialect) -> dict[str, Any]:
    """What is sent: ``body`` plus ``stream`` and the usage flags ``dialect`` allows.

    OpenRouter documents both of its usage flags as no longer needed (usage always comes);
    they are still sent, so a gateway behind an ``openrouter``-dialect URL reports usage too.
    """
    if dialect is Dialect.OPENAI:
        sent = {k: v for k, v in body.items() if k not in OPENROUTER_ONLY_FIELDS}
        return {**sent, "stream": True, "stream_options": {"include_usage": True}}
    return {
        **body,
        "stream": True,
        "stream_options": {"include_usage": True},
        "usage": {"include": True},
    }


class UpstreamClient:
    def __init__(
        self, settings: UpstreamSettings, observer: UpstreamObserver | None = None
    ) -> None:
        self._settings = settings
        self._observer: UpstreamObserver = observer or _NoObserver()
        self._session: aiohttp.ClientSession | None = None
        base = settings.base_url.rstrip("/")
        self._url = f"{base}/chat/completions"
        self._models_url = f"{base}/models"
        # Our own deadlines bound everything after connecting; never aiohttp's 300 s total.
        connect = settings.connect_timeout_s
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect)
        self._headers = {
            "HTTP-Referer": settings.app_url,
            "X-Title": settings.app_title,
        }
        if settings.api_key:
            self._headers["Authorization"] = f"Bearer {settings.api_key}"

    @property
    def configured(self) -> bool:
        return bool(self._settings.api_key)

    @property
    def dialect(self) -> Dialect:
        return self._settings.dialect

    async def start(self) -> None:
        if self._session is None:
            limit = self._settings.max_connections
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=limit, limit_per_host=limit),
                timeout=aiohttp.ClientTimeout(total=None),
            )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> UpstreamClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise UpstreamError(UpstreamFailure.UNAVAILABLE, "The upstream client is not started.")
        return self._session

    async def list_models(self) -> list[ModelInfo]:
        headers = {**self._headers, "Accept": "application/json"}
        return await fetch_model_list(
            self._open_session(), self._models_url, headers, self._settings.models_timeout_s
        )

    async def stream(
        self, body: dict[str, Any], *, gather_s: float = 0.0, busy_gather_s: float = 0.0
    ) -> AsyncGenerator[list[Chunk], None]:
        s = self._settings
        if not s.api_key:
            raise UpstreamError(UpstreamFailure.AUTH, "No upstream API key is configured.")
        data = orjson.dumps(wire_body(body, s.dialect))
        headers = {
            **self._headers,
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
                reader = ResponseReader(
                    resp,
                    first_deadline=first_deadline,
                    total_deadline=total_deadline,
                    idle_s=s.idle_timeout_s,
                    gather_s=gather_s,
                    busy_gather_s=busy_gather_s,
                    secret=s.api_key,
                )
                async with resp, aclosing(reader.batches()) as batches:
                    async for batch in batches:
                        yield batch
                return
            except Retryable as exc:
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
        session = self._open_session()
        loop = asyncio.get_running_loop()
        sent = loop.time()
        try:
            async with asyncio.timeout_at(deadline):
                resp = await session.post(
                    self._url, data=data, headers=headers, timeout=self._timeout
                )
        except aiohttp.ServerTimeoutError as exc:  # aiohttp's connect timeout
            raise Retryable(failure(UpstreamFailure.TIMEOUT), "connect_timeout") from exc
        except TimeoutError as exc:  # our first-token or total deadline, waiting for headers
            raise failure(UpstreamFailure.TIMEOUT) from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise Retryable(failure(UpstreamFailure.UNAVAILABLE), "connection") from exc
        except aiohttp.ClientError as exc:
            raise failure(UpstreamFailure.UNAVAILABLE) from exc
        latency = loop.time() - sent
        logger.debug("upstream response status=%d latency=%.3fs", resp.status, latency)
        self._observer.on_response(resp.status, latency)
        if resp.status == 200:
            return resp
        try:
            error = await self._http_error(resp, deadline)
        finally:
            resp.close()
        if resp.status in RETRY_STATUSES:
            raise Retryable(error, str(resp.status))
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
        detail = None
        with suppress(orjson.JSONDecodeError):
            detail = error_detail(orjson.loads(body))
        log_detail(f"HTTP {status}", detail, self._settings.api_key)
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        return failure(kind_for_status(status), status=status, retry_after=retry_after)

    def _retry_delay(self, error: UpstreamError, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before the next attempt, or None to give up (and finish `error`)."""
        s = self._settings
        ceiling = min(s.retry_max_s, s.retry_base_s * 2**attempt)
        given = error.retry_after if error.status in RETRY_STATUSES else None
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
