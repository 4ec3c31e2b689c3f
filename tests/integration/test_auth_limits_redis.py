"""Per-user limits hold across nodes sharing Redis (REDIS_URL)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.harness import (
    API_KEY,
    JWT_SECRET,
    Recorder,
    SpawnedServer,
    run_server,
    spawn_server,
)
from tests.integration.auth_support import (
    TOKENS_SEEN,
    USER_MSG,
    mint,
    no_secrets_in_logs,
    refused,
)
from tests.upstream_double import UpstreamDouble

__all__ = ["no_secrets_in_logs"]

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/0"
SLOW = "double/slow"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix of our own; its keys are deleted afterwards."""
    value = f"test-auth-{secrets.token_hex(6)}"
    yield value
    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{value}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def recs() -> AsyncIterator[Callable[..., Any]]:
    made: list[Recorder] = []

    async def connect(url: str, sub: str = "alice") -> Recorder:
        rec = Recorder()
        made.append(rec)
        await rec.connect(url, mint(sub))
        await rec.wait_event("session")
        return rec

    yield connect
    for rec in made:
        await rec.close()


def chat(request_id: str, model: str = "double/normal") -> dict[str, Any]:
    return {"request_id": request_id, "messages": USER_MSG, "model": model}


async def test_limits_hold_across_two_server_processes(
    upstream: UpstreamDouble, prefix: str, recs: Callable[..., Any]
) -> None:
    env = {
        "JWT_SECRET": JWT_SECRET,
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": upstream.base_url,
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": prefix,
        "RATE_LIMIT_PER_MINUTE": "3",
        "MAX_STREAMS_PER_USER": "1",
        "MAX_CONNECTIONS_PER_USER": "2",
        "LOG_LEVEL": "debug",
    }
    nodes: list[SpawnedServer] = []
    try:
        nodes = list(await asyncio.gather(spawn_server(env), spawn_server(env)))
        a, b = (node.url for node in nodes)

        # connections: two for alice, one on each node; a third anywhere is refused
        alice_a, alice_b = await recs(a), await recs(b)
        for url in (a, b):
            assert (await refused(url, mint("alice")))["data"]["code"] == "rate_limited"

        # streams: one at a time for alice, whichever node she asks
        assert (await alice_a.call("chat", chat("s1", SLOW)))["ok"] is True
        ack = await alice_b.call("chat", chat("s2"))
        assert ack["error"]["code"] == "too_many_streams"
        assert (await alice_a.call("cancel", {"request_id": "s1"}))["ok"] is True
        await alice_a.terminal("s1")

        # rate: three accepted chats per minute in all (s1 was the first)
        assert (await alice_b.call("chat", chat("r2")))["ok"] is True
        await alice_b.terminal("r2")
        assert (await alice_a.call("chat", chat("r3")))["ok"] is True
        await alice_a.terminal("r3")
        ack = await alice_b.call("chat", chat("r4"))
        assert ack["error"]["code"] == "rate_limited"
        assert 0 < ack["error"]["retry_after"] <= 60

        # bob has limits of his own
        bob = await recs(b, "bob")
        assert (await bob.call("chat", chat("b1")))["ok"] is True
        await bob.terminal("b1")
    finally:
        for node in nodes:
            await node.stop()
    logs = "".join(line for node in nodes for line in node.output)
    assert "Redis unreachable" not in logs
    assert API_KEY not in logs
    assert not [t for t in TOKENS_SEEN if t in logs]


async def test_places_come_back_when_streams_and_connections_end(
    settings_for: Callable[..., Any], prefix: str, recs: Callable[..., Any]
) -> None:
    settings = settings_for(
        redis_url=REDIS_URL,
        redis_key_prefix=prefix,
        max_streams_per_user=1,
        max_connections_per_user=1,
    )
    async with run_server(settings) as one, run_server(settings) as two:
        first = await recs(one.url)
        assert (await refused(two.url, mint("alice")))["data"]["code"] == "rate_limited"
        assert (await first.call("chat", chat("s1")))["ok"] is True
        await first.terminal("s1")
        assert (await first.call("chat", chat("s2")))["ok"] is True  # s1's place came back
        await first.terminal("s2")
        await first.close()
        for _ in range(100):  # the disconnect is handled just after the socket closes
            try:
                second = await recs(two.url)
                break
            except Exception:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the connection's place never came back")
        assert (await second.call("chat", chat("s3")))["ok"] is True
        await second.terminal("s3")
