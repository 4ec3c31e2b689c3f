"""What the ledger keeps of a request's end."""

from __future__ import annotations

from typing import Any

from events.core.pipeline import RequestEnd
from server.ledger_hook import usage_row


def end(usage: dict[str, Any] | None, **kw: Any) -> RequestEnd:
    values: dict[str, Any] = {
        "request_id": "req_1",
        "user_id": "alice",
        "transport": "socketio",
        "room": "lobby",
        "model": "m/one",
        "outcome": "done",
        "finish_reason": "stop",
        "code": None,
        "tokens": 3,
        "usage": usage,
        "accepted_at": 1_796_428_799.0,  # 2026-12-04T23:59:59Z
        "first_token_s": 0.1,
        "duration_s": 2.0,
        "stop_reason": None,
        "generation_id": "gen-1",
        "deltas": 7,
    }
    values.update(kw)
    return RequestEnd(**values)


def test_reported_usage_with_details_and_the_day_of_the_end() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "total_tokens": 30,
        "cost": 0.25,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 6},
    }
    finished = 1_796_428_801.0
    row = usage_row(end(usage), now=finished)
    assert (row.prompt_tokens, row.completion_tokens, row.cost) == (10, 20, 0.25)
    assert (row.cached_tokens, row.reasoning_tokens) == (4, 6)
    assert row.usage_reported is True
    assert row.day == "2026-12-05"  # the UTC day it ended
    assert (row.generation_id, row.room, row.finish_reason) == ("gen-1", "lobby", "stop")
    assert row.id != usage_row(end(usage), now=finished).id  # one row per request


def test_without_usage_the_relayed_deltas_are_the_completion() -> None:
    row = usage_row(end(None, outcome="error", finish_reason=None, code="budget_exceeded"), now=2e9)
    assert (row.prompt_tokens, row.completion_tokens, row.cost) == (0, 7, 0.0)
    assert row.usage_reported is False
    assert row.finish_reason == "budget_exceeded"
    assert (row.cached_tokens, row.reasoning_tokens) == (None, None)


def test_flat_v2_usage_fields_and_junk_are_read_safely() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": "9", "cached_tokens": 1, "cost": True}
    row = usage_row(end(usage), now=2e9)
    assert (row.prompt_tokens, row.completion_tokens, row.cost) == (3, 0, 0.0)
    assert row.cached_tokens == 1
