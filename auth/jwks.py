"""Keys from an identity provider's JWKS endpoint (``JWT_JWKS_URL``).

The key set is fetched once and cached.  It is fetched again when a token names a
``kid`` the cache does not know (the provider rotated its keys) or when the cache is
older than ``max_age_s``, but never more often than every ``min_refresh_s``: a flood of
tokens with made-up ``kid`` values costs the provider at most one request per interval.
Concurrent look-ups share one fetch.  A failed fetch keeps the keys already known.
Token-supplied key locations (``jku``, ``x5u``, ``jwk`` headers) are never followed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from jwt import PyJWK, PyJWTError

from auth.keys import jwk_accepts

logger = logging.getLogger(__name__)

Fetch = Callable[[str], Awaitable[bytes]]

MAX_JWKS_BYTES = 1_000_000


class JwksFetchError(Exception):
    pass


class JwksKeys:
    def __init__(
        self,
        url: str,
        *,
        min_refresh_s: float = 30.0,
        max_age_s: float = 3600.0,
        timeout_s: float = 5.0,
        fetch: Fetch | None = None,
    ) -> None:
        self.url = url
        self.min_refresh_s = min_refresh_s
        self.max_age_s = max_age_s
        self.timeout_s = timeout_s
        self.fetches = 0  # attempts made, for tests and metrics
        self._fetch = fetch or self._http_get
        self._jwks: list[Mapping[str, Any]] = []
        self._parsed: dict[tuple[int, str], PyJWK] = {}
        self._loaded_at: float | None = None
        self._attempted_at = -math.inf
        self._completed = 0  # fetches ended (either way); waiters skip their own
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def loaded(self) -> bool:
        return self._loaded_at is not None

    async def key_for(self, kid: str | None, alg: str) -> PyJWK | None:
        """The key that may verify a token with this header, or ``None``."""
        if self._loaded_at is None:
            await self.refresh()
        elif time.monotonic() - self._loaded_at > self.max_age_s:
            self._refresh_soon()
        key = self._match(kid, alg)
        if key is None and kid is not None:
            await self.refresh()  # maybe the provider rotated its keys
            key = self._match(kid, alg)
        return key

    async def refresh(self) -> None:
        """Fetch the key set unless that was tried less than ``min_refresh_s`` ago."""
        seen = self._completed
        async with self._lock:
            now = time.monotonic()
            if self._completed != seen or now - self._attempted_at < self.min_refresh_s:
                return  # a fetch ended while we waited, or it is too soon to ask again
            self._attempted_at = now
            self.fetches += 1
            try:
                keys = parse_jwks(await self._fetch(self.url))
            except Exception as exc:
                logger.warning("fetching the JWKS from %s failed: %s", self.url, exc)
                return
            finally:
                self._completed += 1
            self._jwks = keys
            self._parsed.clear()
            self._loaded_at = time.monotonic()
            logger.info("loaded %d keys from the JWKS at %s", len(keys), self.url)

    def _refresh_soon(self) -> None:
        if self._lock.locked() or self._tasks:
            return
        task = asyncio.create_task(self.refresh())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _match(self, kid: str | None, alg: str) -> PyJWK | None:
        if kid is not None:
            candidates = [
                (i, jwk)
                for i, jwk in enumerate(self._jwks)
                if jwk.get("kid") == kid and jwk_accepts(jwk, alg)
            ]
        else:  # no kid: only unambiguous when one key fits
            candidates = [(i, jwk) for i, jwk in enumerate(self._jwks) if jwk_accepts(jwk, alg)]
        if len(candidates) != 1:
            return None
        index, jwk = candidates[0]
        cached = self._parsed.get((index, alg))
        if cached is None:
            try:
                cached = PyJWK(dict(jwk), algorithm=alg)
            except PyJWTError:
                return None
            self._parsed[(index, alg)] = cached
        return cached

    async def _http_get(self, url: str) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        headers = {"Accept": "application/json"}
        async with self._session.get(url, headers=headers, allow_redirects=False) as resp:
            if resp.status != 200:
                raise JwksFetchError(f"HTTP {resp.status}")
            body = await resp.content.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise JwksFetchError("the key set is too large")
        return body

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None


def parse_jwks(body: bytes) -> list[Mapping[str, Any]]:
    """The keys of a JWKS document; entries that are not objects are dropped."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise JwksFetchError("the key set is not JSON") from exc
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list):
        raise JwksFetchError("the document has no 'keys' list")
    return [key for key in keys if isinstance(key, dict) and isinstance(key.get("kty"), str)]
