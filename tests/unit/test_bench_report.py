"""The benchmark's arithmetic: CPU per token with Redis, issue 17's checks, the README table."""

from __future__ import annotations

from typing import Any

import pytest

from bench.acceptance import acceptance
from bench.cli import parse_args
from bench.run import per_token_cpu
from bench.scaleout import readme, scale_table, sizing, sizing_basis
from bench.scenarios import FULL, WARMUP, warmup_for
from bench.targets import DEFAULT_TARGETS, QUICK_TARGETS, SCALE_TARGETS, all_targets

NO_VIOLATIONS = {"seq_gap": 0}


def chat(cpu: float, *, p99: float = 20.0, ttft: float = 10.0, **extra: Any) -> dict[str, Any]:
    return {
        "cpu_per_100k": cpu,
        "tokens_per_s": 10_000.0,
        "latency_ms": {"p99": p99},
        "ttft_ms": {"p99": ttft},
        "violations": dict(NO_VIOLATIONS),
        **extra,
    }


def idle(rss: float) -> dict[str, Any]:
    return {"rss_per_conn_kb": rss, "violations": dict(NO_VIOLATIONS)}


def report(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "server_env": {"TOKEN_COALESCE_MS": "20"},
        "scenarios": {"burst": {}, "paced": {"interval_ms": 20}, "idle": {}},
        "results": results,
    }


def by_name(checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["check"]: item for item in checks}


def test_cpu_per_token_includes_redis_for_redis_targets_only() -> None:
    result: dict[str, Any] = {"deltas": 50_000, "cpu_s": 2.0, "redis_cpu_s": 0.5}
    per_token_cpu(result, with_redis=True)
    assert result["relay_cpu_per_100k"] == pytest.approx(4.0)
    assert result["redis_cpu_per_100k"] == pytest.approx(1.0)
    assert result["cpu_per_100k"] == pytest.approx(5.0)

    alone: dict[str, Any] = {"deltas": 50_000, "cpu_s": 2.0, "redis_cpu_s": 0.01}
    per_token_cpu(alone, with_redis=False)
    assert alone["cpu_per_100k"] == pytest.approx(4.0)
    assert "redis_cpu_per_100k" not in alone

    empty: dict[str, Any] = {"deltas": 0, "cpu_s": 1.0}
    per_token_cpu(empty, with_redis=True)
    assert empty["cpu_per_100k"] is None


def test_issue_17_checks_pass_and_fail_at_their_limits() -> None:
    results = {
        "ours": {"burst": chat(1.0), "paced": chat(3.0, ttft=10.0), "idle": idle(30.0)},
        "ours-uvicorn": {"paced": chat(3.7), "idle": idle(40.1)},
        "ours-2w": {
            "burst": chat(1.3),  # exactly 1.3x: passes
            "paced": chat(4.0, p99=50.0, ttft=15.1),  # p99 must be *under* 50; TTFT > 1.5x
            "idle": idle(39.0),
        },
        "peer": {"burst": chat(1.2), "paced": chat(4.0), "idle": idle(26.0)},
    }
    checks = by_name(acceptance(report(results)))
    assert checks["burst: ours-2w CPU s/100k tokens (Redis included) ≤ 1.3 x ours"]["ok"]
    assert checks["paced: ours-2w CPU s/100k tokens (Redis included) ≤ 1.3 x ours"]["ok"] is False
    assert checks["paced: ours-2w added latency p99 < 50 ms"]["ok"] is False
    assert checks["paced: ours-2w TTFT p99 ≤ 1.5 x ours"]["ok"] is False
    assert checks["idle: ours RSS per connection ≤ 1.5 x peer's"]["ok"]
    assert checks["idle: ours-2w RSS per connection ≤ 1.5 x peer's"]["ok"]
    assert checks["idle: ours-uvicorn RSS per connection ≤ 1.5 x peer's"]["ok"] is False
    assert checks["paced: ours CPU s/100k tokens ≤ 0.9 x peer's"]["ok"]
    assert checks["paced: ours-uvicorn CPU s/100k tokens ≤ 0.9 x peer's"]["ok"] is False
    assert checks["burst: CPU s/100k tokens ≤ peer's"]["issue"] == 10
    assert checks["protocol violations, every target and scenario"]["ok"]


def test_a_violation_anywhere_fails_and_missing_targets_are_left_out() -> None:
    bad = chat(1.0)
    bad["violations"] = {"seq_gap": 2}
    checks = by_name(acceptance(report({"ours": {"burst": bad}})))
    assert checks["protocol violations, every target and scenario"]["ok"] is False
    assert not any("ours-2w" in name or "peer" in name for name in checks)


def scale_report() -> dict[str, Any]:
    def redis_paced(cpu: float, redis_cpu_s: float, ops: int) -> dict[str, Any]:
        extra = {"redis_cpu_per_100k": 1.0, "redis_ops_total": ops, "redis_cpu_s": redis_cpu_s}
        extra["relay_cpu_per_100k"] = cpu - 1.0
        return chat(cpu, deltas=60_000, redis_ops_per_token=ops / 60_000, **extra)

    return report(
        {
            "ours": {"burst": chat(0.8), "paced": chat(4.0, deltas=60_000)},
            "ours-2w": {"burst": chat(1.0), "paced": redis_paced(5.0, 0.4, 30_000)},
            "ours-4w": {"burst": chat(1.2), "paced": redis_paced(6.0, 0.5, 40_000)},
        }
    )


def test_scale_table_has_one_row_per_process_count_in_the_run() -> None:
    lines = scale_table(scale_report()).splitlines()
    assert len(lines) == 2 + 3  # header, rule, ours, ours-2w, ours-4w (no ours-redis-1)
    assert lines[2].startswith("| 1 | no | 10,000 | 0.80 | 4.00 | — |")
    assert lines[4].startswith("| 4 | yes | 10,000 | 1.20 | 6.00 (1.00) | — / 0.67 |")


def test_sizing_shows_the_arithmetic_from_the_largest_redis_run() -> None:
    basis = sizing_basis(scale_report())
    assert basis is not None
    # ours-4w: 40,000 ops for 60,000 tokens in 0.5 Redis CPU s
    assert basis["ops_per_token"] == pytest.approx(40_000 / 60_000)
    assert basis["ops_per_cpu_s"] == pytest.approx(80_000)
    text = sizing(scale_report())
    # 10,000 streams x 50 tokens/s x 0.667 ops/token = 333,333 ops/s; / 80,000 = 4.2 cores
    assert "10,000 streams x 50 tokens/s x 0.67 ops/token = 333,333 ops/s" in text
    assert "**4.2 Redis cores**" in text
    assert "**41.7 Redis cores**" in text
    # and the relay processes: 500,000 tokens/s x 5.00 CPU s / 100k tokens = 25 cores
    assert "500,000 tokens/s x 5.00 CPU s / 100k tokens = 25 cores" in text
    assert "no sizing" in readme(report({"ours": {"paced": chat(4.0)}}))


def test_each_mode_picks_its_targets_and_repeats_unless_told_otherwise() -> None:
    plain = parse_args([])
    assert plain.targets == ",".join(DEFAULT_TARGETS)
    assert plain.scenarios == "burst,paced,idle"
    assert plain.repeat == 3  # medians: what the README's tables and the checks use
    quick = parse_args(["--quick"])
    assert (quick.targets, quick.repeat) == (",".join(QUICK_TARGETS), 1)
    assert parse_args(["--quick", "--repeat", "2"]).repeat == 2
    scale = parse_args(["--scale"])
    assert scale.targets == ",".join(SCALE_TARGETS)
    assert scale.scenarios == "burst,paced"
    chosen = parse_args(["--scale", "--targets", "ours-4w", "--scenarios", "paced"])
    assert (chosen.targets, chosen.scenarios) == ("ours-4w", "paced")
    names = {t.name for t in all_targets()}
    assert set(DEFAULT_TARGETS) <= names
    assert set(QUICK_TARGETS) <= set(DEFAULT_TARGETS)
    assert set(SCALE_TARGETS) <= names


def test_uvicorn_targets_start_with_uvicorns_own_command_line() -> None:
    targets = {t.name: t for t in all_targets()}
    argv = targets["ours-uvicorn"].argv(8123)
    assert argv[1:] == ["-m", "uvicorn", "server.main:app", "--host", "127.0.0.1", "--port", "8123"]
    assert targets["ours"].argv(8123)[1:] == ["-m", "server"]
    assert targets["ours-4w"].workers == 4
    assert targets["ours-4w"].redis


def test_the_warm_up_runs_as_many_chats_at_once_as_the_scenario() -> None:
    burst, paced, idle = FULL["burst"], FULL["paced"], FULL["idle"]
    warm = warmup_for(burst)  # the pools grow to the scenario's peak before it is measured
    assert (warm.clients, warm.requests) == (burst.clients, burst.requests) == (50, 2)
    assert (warm.interval_ms, warm.tokens) == (0, 50)  # short chats, as fast as they go
    assert (warmup_for(paced).clients, warmup_for(paced).requests) == (200, 1)
    assert warmup_for(idle) == WARMUP  # the RSS baseline is read after it: kept small


def test_two_process_targets_without_redis_for_ours_and_the_peer() -> None:
    targets = {t.name: t for t in all_targets()}
    assert (targets["ours-2p"].workers, targets["ours-2p"].redis) == (2, False)
    assert (targets["peer-2p"].workers, targets["peer-2p"].kind) == (2, "peer")
