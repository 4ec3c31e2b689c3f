"""The README's scale-out table and Redis sizing, from a saved run (``--scale`` or default).

``python -m bench.report --readme RESULT.json`` prints both as markdown, so the README's
"Scaling out" part is regenerated from a run, never typed in.

Sizing: one Redis runs commands on one core.  The run measures, for a Redis target in the
paced scenario (a real model's pace), the Redis commands per relayed token and the Redis CPU
they took; commands per Redis CPU second is what one Redis core sustains with this command
mix.  Then for N concurrent streams at R tokens/s each:
``N x R x ops/token ÷ (ops per Redis CPU second)`` = Redis cores needed.
"""

from __future__ import annotations

from typing import Any

from bench.report import get

# (target, processes, Redis) in table order; a target missing from the run is left out
SCALE_ROWS = (
    ("ours", 1, False),
    ("ours-redis-1", 1, True),
    ("ours-2w", 2, True),
    ("ours-4w", 4, True),
)
SIZING_STREAMS = (10_000, 100_000)
PACED = "paced"


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def scale_table(report: dict[str, Any]) -> str:
    """Tokens/s and CPU per token (Redis included) as processes grow, Redis ops per token."""
    header = (
        "| processes | Redis | burst tokens/s | burst CPU s / 100k tokens (Redis) |"
        " paced CPU s / 100k tokens (Redis) | Redis ops / token (burst / paced) |"
        " paced added latency p99 ms | paced TTFT p99 ms |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    results = report["results"]
    for target, processes, redis in SCALE_ROWS:
        by_scenario = results.get(target)
        if not by_scenario:
            continue
        burst, paced = by_scenario.get("burst"), by_scenario.get(PACED)
        cells = [
            str(processes),
            "yes" if redis else "no",
            _cell(get(burst, ("tokens_per_s",)), "{:,.0f}"),
            _cpu_cell(burst),
            _cpu_cell(paced),
            _ops_cell(burst, paced),
            _cell(get(paced, ("latency_ms", "p99")), "{:.1f}"),
            _cell(get(paced, ("ttft_ms", "p99")), "{:.1f}"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cpu_cell(result: dict[str, Any] | None) -> str:
    total = get(result, ("cpu_per_100k",))
    redis = get(result, ("redis_cpu_per_100k",))
    if total is None:
        return "—"
    return f"{total:.2f}" if redis is None else f"{total:.2f} ({redis:.2f})"


def _ops_cell(burst: dict[str, Any] | None, paced: dict[str, Any] | None) -> str:
    path = ("redis_ops_per_token",)
    if get(burst, path) is None and get(paced, path) is None:
        return "—"
    return f"{_cell(get(burst, path), '{:.2f}')} / {_cell(get(paced, path), '{:.2f}')}"


def sizing_basis(report: dict[str, Any]) -> dict[str, float] | None:
    """ops/token and ops per Redis CPU second from the paced run of the largest Redis target."""
    results = report["results"]
    for target, processes, _redis in reversed(SCALE_ROWS):
        paced = results.get(target, {}).get(PACED)
        ops = get(paced, ("redis_ops_total",))
        cpu = get(paced, ("redis_cpu_s",))
        deltas = get(paced, ("deltas",))
        if ops and cpu and deltas:
            return {
                "ops_per_token": ops / deltas,
                "ops_per_cpu_s": ops / cpu,
                "tokens_per_cpu_s": deltas / cpu,
                "relay_cpu_per_100k": get(paced, ("relay_cpu_per_100k",)) or 0.0,
                "target_processes": float(processes),
            }
    return None


def sizing(report: dict[str, Any], tokens_per_s_per_stream: float | None = None) -> str:
    """The arithmetic for 10k and 100k concurrent streams, as markdown lines."""
    basis = sizing_basis(report)
    if basis is None:
        return "(no paced run with Redis in this result: no sizing)"
    if tokens_per_s_per_stream is None:
        interval = report["scenarios"][PACED]["interval_ms"]
        tokens_per_s_per_stream = 1000 / interval
    rate, per_token, per_s = tokens_per_s_per_stream, basis["ops_per_token"], basis["ops_per_cpu_s"]
    lines = [
        f"Measured ({int(basis['target_processes'])} processes, paced): {per_token:.2f} Redis"
        f" operations per token; one Redis core ran {per_s:,.0f} operations per CPU second"
        f" ({basis['tokens_per_cpu_s']:,.0f} tokens per Redis CPU second).",
        "",
    ]
    relay = basis["relay_cpu_per_100k"]
    for streams in SIZING_STREAMS:
        ops = streams * rate * per_token
        cores = ops / per_s
        lines.append(
            f"- {streams:,} streams x {rate:g} tokens/s x {per_token:.2f} ops/token"
            f" = {ops:,.0f} ops/s ÷ {per_s:,.0f} ops/s per core = **{cores:.1f} Redis cores**;"
            f" relay processes: {streams * rate:,.0f} tokens/s x {relay:.2f} CPU s / 100k tokens"
            f" = {streams * rate * relay / 100_000:,.0f} cores"
        )
    return "\n".join(lines)


def readme(report: dict[str, Any]) -> str:
    return scale_table(report) + "\n\n" + sizing(report)
