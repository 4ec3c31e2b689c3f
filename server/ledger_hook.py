"""The pipeline's end-of-request hook for the usage ledger: one row per finished request."""

from __future__ import annotations

import secrets
from typing import Any

from events.core.pipeline import PipelineObserver, RequestEnd
from services.budget import utc_day
from services.ledger import Ledger
from services.storage.db.store import UsageRow


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _detail(usage: dict[str, Any], group: str, name: str) -> int | None:
    details = usage.get(group)
    found = _int(details.get(name)) if isinstance(details, dict) else None
    return found if found is not None else _int(usage.get(name))


def usage_row(end: RequestEnd, *, now: float) -> UsageRow:
    """What the ledger keeps of a request.  Without reported usage, the relayed deltas count."""
    usage = end.usage or {}
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    reported = prompt is not None or completion is not None
    cost = usage.get("cost")
    return UsageRow(
        id="u_" + secrets.token_hex(16),
        user_id=end.user_id,
        day=utc_day(now),
        model=end.model,
        request_id=end.request_id,
        generation_id=end.generation_id,
        room=end.room,
        transport=end.transport,
        outcome=end.outcome,
        finish_reason=end.finish_reason or end.code,
        prompt_tokens=prompt or 0,
        completion_tokens=completion if completion is not None else (0 if reported else end.deltas),
        cached_tokens=_detail(usage, "prompt_tokens_details", "cached_tokens"),
        reasoning_tokens=_detail(usage, "completion_tokens_details", "reasoning_tokens"),
        cost=float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else 0.0,
        usage_reported=reported,
        accepted_at=end.accepted_at,
        finished_at=now,
    )


class LedgerObserver:
    """A ``PipelineObserver`` that records each end in the ledger, then tells the next one."""

    def __init__(self, ledger: Ledger, then: PipelineObserver) -> None:
        self._ledger = ledger
        self._then = then

    def accepted(self, transport: str) -> None:
        self._then.accepted(transport)

    def first_token(self, seconds: float) -> None:
        self._then.first_token(seconds)

    def finished(self, end: RequestEnd) -> None:
        self._ledger.record(usage_row(end, now=end.accepted_at + end.duration_s))
        self._then.finished(end)
