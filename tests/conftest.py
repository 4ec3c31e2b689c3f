from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.harness import Recorder, RunningServer, base_settings, run_server
from tests.upstream_double import UpstreamDouble


@pytest.fixture
async def upstream() -> AsyncIterator[UpstreamDouble]:
    async with UpstreamDouble() as double:
        yield double


@pytest.fixture
def settings_for(upstream: UpstreamDouble) -> Callable[..., Any]:
    def make(**overrides: Any) -> Any:
        return base_settings(upstream.base_url, **overrides)

    return make


@pytest.fixture
async def server(upstream: UpstreamDouble) -> AsyncIterator[RunningServer]:
    async with run_server(base_settings(upstream.base_url)) as running:
        yield running


@pytest.fixture
async def recorders() -> AsyncIterator[Callable[[], Recorder]]:
    made: list[Recorder] = []

    def make() -> Recorder:
        rec = Recorder()
        made.append(rec)
        return rec

    yield make
    for rec in made:
        await rec.close()
