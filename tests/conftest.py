from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

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


@pytest.fixture(scope="session")
def redis_base_url() -> Iterator[str]:
    """A Redis server URL (no DB number); skips the test when none can be had."""
    from tests.redis_server import available_redis

    with available_redis() as url:
        if url is None:
            pytest.skip("needs Redis: none answers on 127.0.0.1:6379 and redis-server is missing")
        yield url


@pytest.fixture
def redis_url(redis_base_url: str) -> str:
    """A Redis URL for one test; tests keep to their own key prefix (see `key_prefix`)."""
    return redis_base_url + "/0"


@pytest.fixture
def key_prefix() -> str:
    import secrets

    return f"test-{secrets.token_hex(6)}:"


@pytest.fixture
async def redis_client(redis_url: str, key_prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A client on the test's Redis; every key under the test's prefix goes at the end."""
    client = aioredis.from_url(redis_url)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{key_prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A PostgreSQL server URL (database ``test``); skips when none can be had."""
    from tests.postgres_server import available_postgres

    with available_postgres() as url:
        if url is None:
            pytest.skip(
                "needs PostgreSQL: none answers on 127.0.0.1:5432 and initdb/pg_ctl are missing"
            )
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[str]:
    """A fresh, empty database of each kind: a SQLite file, a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/relay.db"
        return
    from tests.postgres_server import fresh_database

    server_url = request.getfixturevalue("postgres_server_url")
    async with fresh_database(server_url) as url:
        yield url.replace("postgresql://", "postgresql+asyncpg://", 1)
