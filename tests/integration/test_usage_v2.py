"""The ledger and budgets with protocol v2 streams: reasoning and tool-call deltas count
against a budget, a stopped stream's error carries ``last_seq``, and the ledger row keeps
the generation id and the usage details that ``done`` reports."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from tests.harness import STREAM_EVENTS, Recorder, assert_clean_stream, make_token, run_server
from tests.integration.test_usage import chat, to_midnight, usage_settled
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import Scenario

Factory = Callable[[], Recorder]


def ledger_rows(database_url: str) -> list[dict[str, Any]]:
    """The usage rows of a test's SQLite store, read as an operator would."""
    path = database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM usage ORDER BY accepted_at")]


async def test_reasoning_deltas_count_and_the_stopped_stream_ends_with_last_seq(
    upstream: UpstreamDouble, settings_for: Callable[..., Any], recorders: Factory
) -> None:
    thinking = [f"r{i} " for i in range(3000)]
    upstream.set_default(Scenario(reasoning=thinking, reasoning_delay_s=0.002, text="never"))
    async with run_server(settings_for(token_coalesce_ms=20)) as server:
        rec = recorders()
        token = make_token("alice", budget={"tokens_per_day": 60})
        await rec.connect(server.url, token)
        ack = await rec.call("chat", {"messages": [{"role": "user", "content": "think"}]})
        event, error = await rec.terminal(ack["request_id"], timeout=20)
        assert event == "error", error
        assert error["code"] == "budget_exceeded"
        assert abs(error["retry_after"] - to_midnight()) < 5
        assert_clean_stream(rec, ack["request_id"])
        stream = [d for e, d in rec.of(ack["request_id"]) if e in STREAM_EVENTS]
        assert {e for e, _ in rec.of(ack["request_id"])} == {"reasoning", "error"}
        assert error["last_seq"] == stream[-1]["seq"]  # v2: what the client should have
        pieces = [len(d["content"].split()) for d in stream]
        assert sum(pieces[:-1]) < 60 <= sum(pieces)  # stopped by the batch that crossed
        recorded = upstream.requests[-1]
        await upstream.wait_closed(recorded, timeout=5)
        assert recorded.closed_by_client
        body = await usage_settled(server, token, 1)
        assert body["today"]["completion_tokens"] == sum(pieces)  # relayed deltas, no usage
        assert (await chat(rec))[1]["code"] == "budget_exceeded"


async def test_the_ledger_row_keeps_the_generation_id_and_usage_details_of_done(
    upstream: UpstreamDouble, settings_for: Callable[..., Any], recorders: Factory
) -> None:
    usage = {
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "total_tokens": 42,
        "cost": 0.0021,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 9},
    }
    upstream.set_default(Scenario(reasoning=["Let me ", "see."], text="Four.", usage=usage))
    settings = settings_for()
    async with run_server(settings) as server:
        rec = recorders()
        token = make_token("alice")
        await rec.connect(server.url, token)
        event, done = await chat(rec, "2+2?")
        assert event == "done", done
        await usage_settled(server, token, 1)
    assert done["usage"]["cached_tokens"] == 4
    assert done["usage"]["reasoning_tokens"] == 9
    (row,) = ledger_rows(settings.database_url)
    assert row["request_id"] == done["request_id"]
    assert row["generation_id"] == done["generation_id"]
    assert row["model"] == done["model"]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 30)
    assert (row["cached_tokens"], row["reasoning_tokens"]) == (4, 9)
    assert row["cost"] == 0.0021
    assert (row["outcome"], row["finish_reason"], row["usage_reported"]) == ("done", "stop", 1)
