"""Per-user daily budgets (PROTOCOL.md §4 ``budget_exceeded``, §5 ``BUDGET_*``).

A day is a UTC day.  ``Budgets.admit`` refuses a request when the user's tokens or cost
of the day are spent; otherwise it hands out a ``Meter`` that the stream feeds as it
relays: each relayed delta counts as one token, and ``spend`` answers False once the
budget is crossed, so the stream can stop within one batch.  ``settle`` replaces the
estimate by the usage the upstream reported at the end.

Counters (``services.storage.budget_counters``) live in Redis when nodes share one, else
in memory.  A counter that does not exist yet (a new day, a node's first start, a Redis
that lost its data) is seeded once from the ledger.  When Redis fails, counting goes on
in memory on this node (and says so in the log): a budget is never a reason to cut a
stream short or refuse a user because a dependency hiccups.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.storage.budget_counters import Counters

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def next_midnight(now: float) -> float:
    """Epoch seconds of the next UTC midnight."""
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (day + timedelta(days=1)).timestamp()


def seconds_to_midnight(now: float) -> float:
    return max(1.0, math.ceil(next_midnight(now) - now))


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    tokens_per_day: int | None = None  # prompt + completion tokens
    cost_per_day: float | None = None  # USD, as the upstream reports it

    @property
    def active(self) -> bool:
        return bool(self.tokens_per_day) or bool(self.cost_per_day)

    def spent(self, tokens: int, cost: float) -> bool:
        return bool(
            (self.tokens_per_day and tokens >= self.tokens_per_day)
            or (self.cost_per_day and cost >= self.cost_per_day)
        )

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.tokens_per_day:
            out["tokens_per_day"] = self.tokens_per_day
        if self.cost_per_day:
            out["cost_per_day"] = self.cost_per_day
        return out

    def overridden_by(self, claim: Any) -> BudgetLimits:
        """The JWT ``budget`` claim ``{tokens_per_day?, cost_per_day?}`` wins, field by field."""
        if not isinstance(claim, Mapping):
            return self
        tokens, cost = self.tokens_per_day, self.cost_per_day
        value = claim.get("tokens_per_day")
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            tokens = int(value) or None
        value = claim.get("cost_per_day")
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            cost = float(value) or None
        return BudgetLimits(tokens, cost)


class BudgetExceeded(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__("The daily budget is spent.")
        self.retry_after = retry_after


SpentInLedger = Callable[[str, str], Awaitable[tuple[int, float]]]  # (user, day) -> totals


class Budgets:
    def __init__(
        self,
        defaults: BudgetLimits,
        counters: Counters,
        *,
        ledger: SpentInLedger | None = None,
        clock: Clock = time.time,
        ledger_retry_s: float = 30.0,
    ) -> None:
        self.defaults = defaults
        self.counters = counters
        self._ledger = ledger
        self._clock = clock
        self._ledger_retry_s = ledger_retry_s
        self._ledger_down_until = 0.0

    def limits_for(self, claim: Any) -> BudgetLimits:
        return self.defaults.overridden_by(claim)

    def retry_after(self) -> float:
        return seconds_to_midnight(self._clock())

    async def spent(self, user: str, day: str | None = None) -> tuple[int, float]:
        """The user's tokens and cost of ``day`` (today) as the counters know them."""
        now = self._clock()
        day = day or utc_day(now)
        totals = await self.counters.get(user, day)
        if totals is not None:
            return totals
        tokens, cost = 0, 0.0
        if self._ledger is not None:
            if now < self._ledger_down_until:  # unseeded until the ledger answers again
                return await self.counters.add(user, day, 0, 0.0, next_midnight(now))
            try:
                tokens, cost = await self._ledger(user, day)
            except Exception as exc:
                # Meanwhile the counters alone decide.
                logger.warning("budget: the ledger did not answer (%s); seeding later", exc)
                self._ledger_down_until = now + self._ledger_retry_s
                return await self.counters.add(user, day, 0, 0.0, next_midnight(now))
        await self.counters.seed(user, day, tokens, cost, next_midnight(now))
        return await self.counters.add(user, day, 0, 0.0, next_midnight(now))

    async def admit(self, user: str, claim: Any = None) -> Meter | None:
        """``BudgetExceeded`` when the day's budget is spent; else a meter (None: no budget)."""
        limits = self.limits_for(claim)
        if not limits.active:
            return None
        now = self._clock()
        day = utc_day(now)
        tokens, cost = await self.spent(user, day)
        if limits.spent(tokens, cost):
            raise BudgetExceeded(seconds_to_midnight(now))
        return Meter(self, user, day, limits, next_midnight(now))


class Meter:
    """One request's share of a budget: relayed deltas as they go, real usage at the end."""

    def __init__(
        self, budgets: Budgets, user: str, day: str, limits: BudgetLimits, expire_at: float
    ) -> None:
        self._budgets = budgets
        self.user = user
        self.day = day
        self.limits = limits
        self._expire_at = expire_at
        self.counted = 0  # deltas counted as tokens so far
        self._settled = False

    def retry_after(self) -> float:
        return self._budgets.retry_after()

    async def spend(self, deltas: int) -> bool:
        """Count ``deltas`` tokens; False once the day's budget is crossed."""
        self.counted += deltas
        tokens, cost = await self._budgets.counters.add(
            self.user, self.day, deltas, 0.0, self._expire_at
        )
        return not self.limits.spent(tokens, cost)

    async def settle(self, prompt_tokens: int, completion_tokens: int | None, cost: float) -> None:
        """Replace the estimate by the reported usage (``None``: keep the relayed count)."""
        if self._settled:
            return
        self._settled = True
        completion = self.counted if completion_tokens is None else completion_tokens
        correction = prompt_tokens + completion - self.counted
        if correction or cost:
            await self._budgets.counters.add(self.user, self.day, correction, cost, self._expire_at)
