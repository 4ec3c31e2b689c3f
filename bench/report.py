"""The table, the us/peer ratios, Redis's top commands, the acceptance printout, and the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.redisstats import top

OURS, PEER = "ours", "peer"

# (label, key path, format); a key path walks the result dict
ROWS: dict[str, list[tuple[str, tuple[str, ...], str]]] = {
    "chat": [
        ("tokens/s", ("tokens_per_s",), "{:.0f}"),
        ("server CPU s / 100k tokens (Redis incl.)", ("cpu_per_100k",), "{:.2f}"),
        ("  relay processes", ("relay_cpu_per_100k",), "{:.2f}"),
        ("  Redis", ("redis_cpu_per_100k",), "{:.2f}"),
        ("relay CPU s", ("cpu_s",), "{:.2f}"),
        ("TTFT p50 ms", ("ttft_ms", "p50"), "{:.1f}"),
        ("TTFT p99 ms", ("ttft_ms", "p99"), "{:.1f}"),
        ("added latency p50 ms", ("latency_ms", "p50"), "{:.1f}"),
        ("added latency p99 ms", ("latency_ms", "p99"), "{:.1f}"),
        ("token events / request", ("events_per_request_mean",), "{:.0f}"),
        ("relay read / write system calls per token", ("reads_per_token",), "{:.2f}"),
        ("  writes", ("writes_per_token",), "{:.2f}"),
        ("protocol violations", ("violations_total",), "{:.0f}"),
        ("Redis CPU s", ("redis_cpu_s",), "{:.2f}"),
        ("Redis ops / token", ("redis_ops_per_token",), "{:.2f}"),
        ("load generator CPU s", ("client_cpu_s",), "{:.2f}"),
        ("upstream CPU s", ("upstream_cpu_s",), "{:.2f}"),
    ],
    "idle": [
        ("RSS KiB / idle connection", ("rss_per_conn_kb",), "{:.1f}"),
        ("RSS MiB with all connected", ("rss_after_mib",), "{:.1f}"),
        ("connect time s", ("connect_s",), "{:.1f}"),
        ("protocol violations", ("violations_total",), "{:.0f}"),
    ],
}
RATIO_KEYS = {
    "tokens_per_s": ("tokens_per_s",),
    "cpu_per_100k": ("cpu_per_100k",),
    "ttft_p50": ("ttft_ms", "p50"),
    "ttft_p99": ("ttft_ms", "p99"),
    "latency_p50": ("latency_ms", "p50"),
    "latency_p99": ("latency_ms", "p99"),
    "rss_per_conn_kb": ("rss_per_conn_kb",),
}


def get(result: dict[str, Any] | None, path: tuple[str, ...]) -> float | None:
    value: Any = result
    for key in path:
        if not isinstance(value, dict):
            return None
        if key == "violations_total":
            return float(sum(value.get("violations", {}).values()))
        if key == "rss_after_mib":
            after = value.get("rss_after_kb")
            return None if after is None else after / 1024
        value = value.get(key)
    return float(value) if isinstance(value, int | float) else None


def ratios(report: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """``{scenario: {target: {metric: target / peer}}}`` for every target but the peer."""
    results = report["results"]
    peer = results.get(PEER, {})
    out: dict[str, dict[str, dict[str, float]]] = {}
    for scenario in report["scenarios"]:
        base = peer.get(scenario)
        if base is None:
            continue
        for target, by_scenario in results.items():
            if target == PEER or scenario not in by_scenario:
                continue
            row: dict[str, float] = {}
            for metric, path in RATIO_KEYS.items():
                ours, theirs = get(by_scenario[scenario], path), get(base, path)
                if ours is not None and theirs:
                    row[metric] = round(ours / theirs, 3)
            out.setdefault(scenario, {})[target] = row
    return out


def coalesce_ms(report: dict[str, Any]) -> float:
    env = report.get("server_env", {})
    if "TOKEN_COALESCE_MS" in env:
        return float(env["TOKEN_COALESCE_MS"])
    from server.settings import Settings

    return float(Settings.model_fields["token_coalesce_ms"].default)


def _fmt(value: float | None, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def table(report: dict[str, Any]) -> str:
    targets = list(report["targets"])
    rat = report.get("ratios", {})
    lines: list[str] = []
    for scenario, meta in report["scenarios"].items():
        rows = ROWS["idle" if meta["requests"] == 0 else "chat"]
        header = ["", *targets, "ours/peer"]
        body: list[list[str]] = []
        for label, path, fmt in rows:
            cells = [_fmt(get(report["results"][t].get(scenario), path), fmt) for t in targets]
            metric = next((m for m, p in RATIO_KEYS.items() if p == path), None)
            ratio = rat.get(scenario, {}).get(OURS, {}).get(metric) if metric else None
            body.append([label, *cells, _fmt(ratio, "{:.2f}x")])
        lines.append(f"\n{scenario}: {meta['describe']}")
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines.extend("| " + " | ".join(row) + " |" for row in body)
        lines.extend(redis_top_lines(report, scenario))
    return "\n".join(lines)


def redis_top_lines(report: dict[str, Any], scenario: str, n: int = 6) -> list[str]:
    """Per Redis target: its most called commands in this scenario, calls per token."""
    lines = []
    for target, by_scenario in report["results"].items():
        result = by_scenario.get(scenario) or {}
        deltas, ops = result.get("deltas"), result.get("redis_ops")
        if not deltas or not ops:
            continue
        cells = ", ".join(f"{name} {calls / deltas:.3f}" for name, calls in top(ops, n))
        lines.append(f"Redis commands per token, {target}: {cells}")
    return lines


def describe_machine(m: dict[str, Any]) -> str:
    mhz = f" @ {m['cpu_mhz']} MHz" if m.get("cpu_mhz") else ""
    return (
        f"machine: {m['cores']} x {m['cpu']}{mhz}, {m['memory_gb']} GB RAM, Linux {m['kernel']},"
        f" Python {m['python']}, Node {m['node']}"
    )


def print_report(report: dict[str, Any]) -> None:
    print("\n" + describe_machine(report["machine"]))
    if report.get("cpus"):
        pins = report["cpus"]
        harness = pins["harness"]
        print(f"servers on CPUs {pins['servers']}; upstream, load generator, Redis on {harness}")
    print(table(report))
    issue = None
    for item in report.get("acceptance", []):
        if item.get("issue", 10) != issue:
            issue = item.get("issue", 10)
            print(f"\nacceptance (issue {issue}):")
        mark = "PASS" if item["ok"] else "FAIL"
        value = _fmt(item["value"], "{:.2f}")
        limit = _fmt(item["limit"], "{:.2f}")
        print(f"  [{mark}] {item['check']}: {value} (limit {limit})")


def write_chart(report: dict[str, Any], path: Path) -> Path | None:
    """A 2x2 chart for the README; needs matplotlib (``pip install -e '.[bench]'``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    targets = list(report["targets"])
    labels = [report["targets"][t] for t in targets]
    palette = {
        "before": "#a0aec0",
        "ours": "#2b6cb0",
        "ours-uvicorn": "#4c51bf",
        "ours-redis-1": "#3182ce",
        "ours-uvicorn-redis": "#805ad5",
        "ours-2w": "#68a0d8",
        "ours-4w": "#90cdf4",
        "ours-2p": "#2c5282",
        "peer": "#dd6b20",
        "peer-2p": "#f6ad55",
    }
    colors = [palette.get(t, "#38a169") for t in targets]
    panels = [
        ("CPU s per 100k tokens (lower is better)", ("cpu_per_100k",), ["burst", "paced"]),
        (
            f"added latency p99, ms (paced; window {coalesce_ms(report):g} ms)",
            ("latency_ms", "p99"),
            ["paced"],
        ),
        ("time to first token p99, ms", ("ttft_ms", "p99"), ["burst", "paced"]),
        ("RSS per idle connection, KiB", ("rss_per_conn_kb",), ["idle"]),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
    for ax, (title, key, scenarios) in zip(axes.flat, panels, strict=True):
        scenarios = [s for s in scenarios if s in report["scenarios"]]
        width = 0.8 / max(len(targets), 1)
        for i, (target, color) in enumerate(zip(targets, colors, strict=False)):
            values = [get(report["results"][target].get(s), key) or 0 for s in scenarios]
            xs = [j + i * width for j in range(len(scenarios))]
            bars = ax.bar(xs, values, width, color=color, label=labels[i])
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks([j + width * (len(targets) - 1) / 2 for j in range(len(scenarios))])
        ax.set_xticklabels(scenarios)
        ax.set_title(title, fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    axes.flat[0].legend(fontsize=8, frameon=False)
    m = report["machine"]
    fig.suptitle(
        f"llm-relay vs Node socket.io@4 peer — {m['cores']} cores, {m['cpu']}", fontsize=10
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report RESULT.json``: print a saved run's table again (the
    acceptance checks recomputed with today's rules); ``--readme``: the README's scale-out
    table and Redis sizing instead."""
    import argparse
    import json

    from bench.acceptance import acceptance
    from bench.scaleout import readme

    parser = argparse.ArgumentParser(prog="python -m bench.report")
    parser.add_argument("result", type=Path)
    parser.add_argument("--chart", action="store_true", help="write the PNG next to it again")
    parser.add_argument(
        "--readme", action="store_true", help="print the README's scale-out table (markdown)"
    )
    args = parser.parse_args(argv)
    report = json.loads(args.result.read_text())
    if args.readme:
        print(readme(report))
        return 0
    report["acceptance"] = acceptance(report)
    print_report(report)
    if args.chart:
        print(write_chart(report, args.result.with_suffix(".png")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
