"""The app's upstream, handed to the pipeline by ``create_app`` and built at start-up.

The real client needs the aiohttp session (and, in demo mode, the simulator's address),
which exist only once the event loop runs; ``Runtime.start`` binds it here.  Until
then, and after ``aclose``, a request fails with ``upstream_unavailable``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from services.upstream.base import Chunk, Upstream, UpstreamError, UpstreamFailure


class AppUpstream:
    """An ``Upstream`` that delegates to the one bound at start-up."""

    def __init__(self) -> None:
        self._inner: Upstream | None = None

    def bind(self, inner: Upstream) -> None:
        self._inner = inner

    @property
    def configured(self) -> bool:
        return self._inner is not None and self._inner.configured

    async def start(self) -> None:
        if self._inner is not None:
            await self._inner.start()

    async def aclose(self) -> None:
        inner, self._inner = self._inner, None
        if inner is not None:
            await inner.aclose()

    def stream(self, body: dict[str, Any], *, gather_s: float = 0.0) -> AsyncIterator[list[Chunk]]:
        if self._inner is None:
            raise UpstreamError(UpstreamFailure.UNAVAILABLE, "The server is not ready.")
        return self._inner.stream(body, gather_s=gather_s)
