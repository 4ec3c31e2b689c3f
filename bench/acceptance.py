"""The acceptance checks of issues 10 and 17, on one run's results.

Issue 10 compares one process (``ours``) with the Node peer.  Issue 17 adds the multi-node
path (``ours-2w``: two processes on one Redis, Redis's own CPU included in CPU per token)
against one process, idle memory for every start command and with Redis, and tighter paced
CPU against the peer ("burst stays ahead" is issue 10's burst check).  A check whose
targets or scenarios are not in the run is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.report import OURS, PEER, coalesce_ms, get

REDIS = "ours-2w"  # "with Redis" in issue 17: the multi-node target of the default run
# Idle memory per connection must hold for these, whatever the start command, with Redis or not
IDLE_TARGETS = ("ours", "ours-uvicorn", "ours-redis-1", "ours-uvicorn-redis", "ours-2w", "ours-4w")
# Paced CPU per token against the peer, for both start commands
PACED_TARGETS = ("ours", "ours-uvicorn")

CPU = ("cpu_per_100k",)
LATENCY_P99 = ("latency_ms", "p99")
TTFT_P99 = ("ttft_ms", "p99")
RSS = ("rss_per_conn_kb",)


@dataclass
class Checks:
    results: dict[str, dict[str, Any]]
    items: list[dict[str, Any]] = field(default_factory=list)

    def value(self, target: str, scenario: str, path: tuple[str, ...]) -> float | None:
        return get(self.results.get(target, {}).get(scenario), path)

    def has(self, scenario: str, *targets: str) -> bool:
        return all(scenario in self.results.get(t, {}) for t in targets)

    def check(
        self,
        issue: int,
        name: str,
        value: float | None,
        limit: float | None,
        *,
        strict: bool = False,
    ) -> None:
        ok = False
        if value is not None and limit is not None:
            ok = value < limit if strict else value <= limit
        self.items.append({"issue": issue, "check": name, "value": value, "limit": limit, "ok": ok})

    def times(
        self, factor: float, target: str, scenario: str, path: tuple[str, ...]
    ) -> float | None:
        base = self.value(target, scenario, path)
        return None if base is None else factor * base


def acceptance(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every check of issues 10 and 17 that this run can answer."""
    checks = Checks(report["results"])
    issue_10(checks, coalesce_ms(report))
    issue_17(checks)
    total = 0.0
    for by_scenario in checks.results.values():
        for result in by_scenario.values():
            total += sum(result.get("violations", {}).values())
    checks.check(17, "protocol violations, every target and scenario", total, 0)
    return checks.items


def issue_10(c: Checks, window: float) -> None:
    """One process against the Node peer."""
    for scenario in ("burst", "paced"):
        if c.has(scenario, OURS, PEER):
            c.check(
                10,
                f"{scenario}: CPU s/100k tokens ≤ peer's",
                c.value(OURS, scenario, CPU),
                c.value(PEER, scenario, CPU),
            )
    if c.has("paced", OURS, PEER):
        peer_p99 = c.value(PEER, "paced", LATENCY_P99)
        c.check(
            10,
            f"paced: added latency p99 ≤ min(peer p99 + {window:g} ms, 50 ms)",
            c.value(OURS, "paced", LATENCY_P99),
            None if peer_p99 is None else min(peer_p99 + window, 50.0),
        )
        c.check(
            10,
            "paced: TTFT p99 ≤ 1.5 x peer's",
            c.value(OURS, "paced", TTFT_P99),
            c.times(1.5, PEER, "paced", TTFT_P99),
        )
    if c.has("idle", OURS, PEER):
        c.check(
            10,
            "idle: RSS per connection ≤ 2 x peer's",
            c.value(OURS, "idle", RSS),
            c.times(2, PEER, "idle", RSS),
        )


def issue_17(c: Checks) -> None:
    """Multi-node at the cost of one; one serving configuration; paced CPU ahead of Node."""
    for scenario in ("burst", "paced"):
        if c.has(scenario, REDIS, OURS):
            c.check(
                17,
                f"{scenario}: {REDIS} CPU s/100k tokens (Redis included) ≤ 1.3 x ours",
                c.value(REDIS, scenario, CPU),
                c.times(1.3, OURS, scenario, CPU),
            )
    if c.has("paced", REDIS):
        c.check(
            17,
            f"paced: {REDIS} added latency p99 < 50 ms",
            c.value(REDIS, "paced", LATENCY_P99),
            50.0,
            strict=True,
        )
    if c.has("paced", REDIS, OURS):
        c.check(
            17,
            f"paced: {REDIS} TTFT p99 ≤ 1.5 x ours",
            c.value(REDIS, "paced", TTFT_P99),
            c.times(1.5, OURS, "paced", TTFT_P99),
        )
    for target in IDLE_TARGETS:
        if c.has("idle", target, PEER):
            c.check(
                17,
                f"idle: {target} RSS per connection ≤ 1.5 x peer's",
                c.value(target, "idle", RSS),
                c.times(1.5, PEER, "idle", RSS),
            )
    for target in PACED_TARGETS:
        if c.has("paced", target, PEER):
            c.check(
                17,
                f"paced: {target} CPU s/100k tokens ≤ 0.9 x peer's",
                c.value(target, "paced", CPU),
                c.times(0.9, PEER, "paced", CPU),
            )
