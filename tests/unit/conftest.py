"""Fixtures of the upstream client's tests (helpers in ``upstream_server.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from services.upstream.client import UpstreamClient
from tests.unit.upstream_server import Upstream, upstreams


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Awaitable[Upstream]]]:
    """``start(*handlers)``: an ``Upstream`` on a loopback port, stopped at teardown."""
    async with upstreams() as start:
        yield start


@pytest.fixture
async def session() -> AsyncIterator[list[UpstreamClient]]:
    """The clients a test made (``make``); closed at teardown."""
    made: list[UpstreamClient] = []
    yield made
    for client in made:
        await client.aclose()
