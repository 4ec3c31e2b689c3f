"""Budgets across nodes: two servers on one Redis share each user's daily counters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.harness import Recorder, assert_clean_stream, make_token, run_server
from tests.integration.test_usage import LONG_TEXT, chat, to_midnight
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import Scenario

pytestmark = pytest.mark.redis

BUDGET = 500


@pytest.fixture
def prefix(redis_client: aioredis.Redis, key_prefix: str) -> str:
    """This test's key prefix on the shared Redis; its keys are deleted afterwards
    (by ``redis_client``)."""
    return key_prefix


async def test_two_nodes_stop_a_user_at_the_shared_budget(
    upstream: UpstreamDouble,
    settings_for: Callable[..., Any],
    recorders: Callable[[], Recorder],
    redis_url: str,
    prefix: str,
    tmp_path: Any,
) -> None:
    upstream.set_default(Scenario(text=LONG_TEXT, delay_s=0.002))
    settings = settings_for(
        redis_url=redis_url,
        redis_key_prefix=prefix,
        budget_tokens_per_day=BUDGET,
        token_coalesce_ms=20,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/relay.db",
    )
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(run_server(settings)) for _ in range(2)]
        alice = make_token("alice")
        clients = []
        for node in nodes:
            rec = recorders()
            await rec.connect(node.url, alice)
            clients.append(rec)
        message = {"messages": [{"role": "user", "content": "a long answer, please"}]}
        acks = await asyncio.gather(
            *(rec.call("chat", message) for rec in clients for _ in range(2))
        )
        streams = [(clients[i // 2], ack["request_id"]) for i, ack in enumerate(acks)]
        ends = await asyncio.gather(*(rec.terminal(rid, timeout=30) for rec, rid in streams))
        relayed = 0
        last_batches = 0
        for (rec, rid), (event, error) in zip(streams, ends, strict=True):
            assert event == "error", error
            assert error["code"] == "budget_exceeded"
            assert abs(error["retry_after"] - to_midnight()) < 5
            assert_clean_stream(rec, rid)
            batches = [len(t["content"].split()) for t in rec.tokens(rid)]
            relayed += sum(batches)
            last_batches += batches[-1] if batches else 0
        assert relayed - last_batches < BUDGET  # the overshoot is at most one batch per stream
        assert relayed >= BUDGET
        for rec in clients:  # spent on every node
            event, error = await chat(rec)
            assert (event, error["code"]) == ("refused", "budget_exceeded")
        bob = recorders()
        await bob.connect(nodes[1].url, make_token("bob"))
        event, done = await chat(bob, model="double/normal")  # other users are unaffected
        assert event == "done", done
