"""The list of models a client may pick: the allowlist, or the upstream's ``/models``, cached.

With ``ALLOWED_MODELS`` set, the list is the allowlist and the upstream is never asked.
Otherwise the upstream's list (``Upstream.list_models``: ``GET {base_url}/models`` for
OpenRouter and most OpenAI-compatible servers, the simulator's own models in demo mode)
is fetched at most once per ``ttl_s``; concurrent callers share one fetch, and a failed
fetch is retried no sooner than ``failure_ttl_s`` later (the last good list, or the default
model alone, is served meanwhile). The default model is always in the list, first (the
server refuses to start with an allowlist that does not allow it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import orjson

from services.upstream.base import ModelInfo, ModelListError

__all__ = [
    "ModelCatalog",
    "ModelInfo",
    "ModelList",
    "ModelListError",
    "fetch_model_list",
    "parse_model_list",
]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024  # OpenRouter's list with descriptions is about 1 MB
MAX_MODELS = 5000
_MAX_ID_CHARS = 200

Source = Literal["allowlist", "upstream", "default"]


@dataclass(frozen=True, slots=True)
class ModelList:
    default_model: str
    models: tuple[ModelInfo, ...]
    source: Source

    def to_wire(self) -> dict[str, Any]:
        return {
            "default_model": self.default_model,
            "models": [m.to_wire() for m in self.models],
            "source": self.source,
        }


Fetch = Callable[[], Awaitable[list[ModelInfo]]]


def parse_model_list(body: bytes) -> list[ModelInfo]:
    """``{"data": [{"id", "name"?}, ...]}`` (OpenAI and OpenRouter shape) → models."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ModelListError("the model list is not JSON") from exc
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(data, list):
        raise ModelListError("the model list has no 'data' array")
    out: list[ModelInfo] = []
    seen: set[str] = set()
    for item in data[:MAX_MODELS]:
        if not isinstance(item, dict):
            continue
        model_id = item.get("id")
        if not isinstance(model_id, str) or not model_id or len(model_id) > _MAX_ID_CHARS:
            continue
        if model_id in seen:
            continue
        seen.add(model_id)
        name = item.get("name")
        label = name[:_MAX_ID_CHARS] if isinstance(name, str) and name.strip() else model_id
        out.append(ModelInfo(model_id, label))
    return out


async def fetch_model_list(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], timeout_s: float
) -> list[ModelInfo]:
    """``GET url`` through ``session`` → its models; raises ``ModelListError``."""
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with session.get(url, headers=headers, timeout=timeout) as resp:
            if resp.status != 200:
                raise ModelListError(f"the upstream answered HTTP {resp.status}")
            body = await resp.content.read(MAX_BODY_BYTES + 1)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ModelListError(f"the upstream is unreachable ({type(exc).__name__})") from exc
    if len(body) > MAX_BODY_BYTES:
        raise ModelListError("the model list is too large")
    return parse_model_list(body)


class ModelCatalog:
    def __init__(
        self,
        default_model: str,
        allowed: Sequence[str],
        fetch: Fetch | None,
        *,
        ttl_s: float = 600,
        failure_ttl_s: float = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default_model = default_model
        self._allowed = tuple(dict.fromkeys(allowed))
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._failure_ttl_s = failure_ttl_s
        self._clock = clock
        self._cached: ModelList | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def _with_default(self, models: Sequence[ModelInfo], source: Source) -> ModelList:
        rest = tuple(m for m in models if m.id != self.default_model)
        first = next((m for m in models if m.id == self.default_model), None)
        default = first or ModelInfo(self.default_model, self.default_model)
        return ModelList(self.default_model, (default, *rest), source)

    async def list(self) -> ModelList:
        if self._allowed:
            # The default model is allowed (checked at start-up) and listed first.
            models = [ModelInfo(m, m) for m in self._allowed]
            return self._with_default(models, "allowlist")
        if self._fetch is None:
            return self._with_default([], "default")
        if self._cached is not None and self._clock() < self._expires:
            return self._cached
        async with self._lock:
            if self._cached is not None and self._clock() < self._expires:
                return self._cached
            try:
                fetched = await self._fetch()
            except ModelListError as exc:
                logger.warning("could not fetch the upstream model list: %s", exc)
                stale = self._cached or self._with_default([], "default")
                self._cached, self._expires = stale, self._clock() + self._failure_ttl_s
                return stale
            self._cached = self._with_default(fetched, "upstream")
            self._expires = self._clock() + self._ttl_s
            return self._cached
