"""One benchmark run: the bench upstream (Node) and a private Redis, then for each scenario,
repeat and target a fresh server, a warm-up, and the Node load generator; CPU and RSS come
from /proc. ``run()`` measures and saves; ``bench.cli`` parses ``python -m bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import secrets
import shutil
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench import redisstats
from bench.acceptance import acceptance
from bench.procs import LoadRun, Proc, free_port, node_binary, start, wait_port
from bench.profile import Profiler
from bench.report import print_report, ratios, write_chart
from bench.scenarios import FULL, QUICK, Scenario, warmup_for
from bench.targets import (
    BENCH_DIR,
    NODE_DIR,
    RunContext,
    Running,
    Target,
    all_targets,
)

ROOT = BENCH_DIR.parent
LOAD = NODE_DIR / "load.mjs"


def machine() -> dict[str, Any]:
    model, mhz = "", ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("cpu MHz") and not mhz:
                mhz = line.split(":", 1)[1].strip()
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    versions: dict[str, str] = {}
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("python-socketio", "python-engineio", "uvicorn", "aiohttp", "orjson", "uvloop"):
        with contextlib.suppress(PackageNotFoundError):
            versions[dist] = version(dist)
    for pkg in ("socket.io", "socket.io-client"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            meta = json.loads((ROOT / "node_modules" / pkg / "package.json").read_text())
            versions[f"npm {pkg}"] = meta["version"]
    node = node_binary()
    import subprocess

    node_version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu": model,
        "cpu_mhz": round(float(mhz)) if mhz else None,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node_version,
        "packages": versions,
        "load_avg_at_start": os.getloadavg(),
    }


@contextlib.asynccontextmanager
async def bench_upstream(log_dir: Path) -> AsyncIterator[tuple[Proc, str]]:
    port = free_port()
    proc = await start(
        "upstream",
        [node_binary(), str(NODE_DIR / "upstream.mjs")],
        env={"PORT": str(port)},
        cwd=ROOT,
        log_dir=log_dir,
    )
    try:
        await wait_port(port, proc)
        yield proc, f"http://127.0.0.1:{port}/v1"
    finally:
        await proc.stop()


@contextlib.asynccontextmanager
async def bench_redis(
    log_dir: Path,
) -> AsyncIterator[tuple[Proc | None, str | None, redisstats.CommandStats | None]]:
    """A private redis-server for the run, so its CPU and commandstats are ours alone to read."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None, None, None
        return
    port = free_port()
    workdir = log_dir / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(workdir)]
    proc = await start("redis", argv, env={}, cwd=ROOT, log_dir=log_dir)
    try:
        await wait_port(port, proc)
        url = f"redis://127.0.0.1:{port}/0"
        stats = redisstats.CommandStats(url)
        try:
            yield proc, url, stats
        finally:
            await stats.close()
    finally:
        await proc.stop()


def load_config(scenario: Scenario, urls: list[str], secret: str) -> dict[str, Any]:
    return {
        "scenario": "idle" if scenario.idle else scenario.name,
        "urls": urls,
        "secret": secret,
        "clients": scenario.clients,
        "requests": scenario.requests,
        "tokens": scenario.tokens,
        "interval_ms": scenario.interval_ms,
        "ramp_ms": scenario.ramp_ms,
        "timeout_ms": int(scenario.timeout_s * 1000),
        "connect_concurrency": 50,
    }


async def run_load(
    scenario: Scenario,
    running: Running,
    secret: str,
    others: dict[str, Proc | None],
    redis_stats: redisstats.CommandStats | None = None,
) -> dict[str, Any]:
    """Connect, snapshot /proc (and Redis's commandstats when ``redis_stats`` is given: the
    target uses Redis), run, snapshot again; return the load result + measurements."""
    load = await LoadRun.start(LOAD, load_config(scenario, running.urls, secret), ROOT)
    try:
        ready = await load.read(scenario.timeout_s)
        if scenario.idle:
            rss_before = running.rss_before
            await asyncio.sleep(scenario.hold_s)
            rss_after = running.rss()
            await load.send("stop")
            result = await load.read(30)
            connected = max(int(ready["connected"]), 1)
            result["rss_before_kb"] = rss_before
            result["rss_after_kb"] = rss_after
            result["rss_per_conn_kb"] = (rss_after - rss_before) / connected
            result["connect_s"] = ready["connect_s"]
            result["violations"]["connect_failed"] = ready["failed"]
            return result
        cpu_before = running.cpu()
        calls_before = running.syscalls()
        side_before = {name: p.cpu() for name, p in others.items() if p is not None}
        client_before = _cpu_or_zero(load.pid)
        ops_before = await redis_stats.snapshot() if redis_stats else None
        started = time.monotonic()
        await load.send("go")
        result = await load.read(scenario.timeout_s + 30)
        result["wall_s"] = time.monotonic() - started
        result["cpu_s"] = running.cpu() - cpu_before
        reads, writes = (a - b for a, b in zip(running.syscalls(), calls_before, strict=True))
        result["client_cpu_s"] = _cpu_or_zero(load.pid) - client_before
        for name, proc in others.items():
            if proc is not None:
                result[f"{name}_cpu_s"] = proc.cpu() - side_before[name]
        result["violations"]["connect_failed"] = ready["failed"]
        deltas = result.get("deltas") or 0
        if deltas:  # system calls per token: how many reads and writes one delta costs
            result["reads_per_token"] = reads / deltas
            result["writes_per_token"] = writes / deltas
        if redis_stats is not None and ops_before is not None:
            ops = redisstats.delta(ops_before, await redis_stats.snapshot())
            result.update(redisstats.summarise(ops, deltas))
        per_token_cpu(result, with_redis=redis_stats is not None)
        return result
    finally:
        await load.close()


def per_token_cpu(result: dict[str, Any], *, with_redis: bool) -> None:
    """``cpu_per_100k``: the relay processes' CPU per 100k deltas, plus Redis's own when the
    target uses Redis (shown apart as ``relay_cpu_per_100k`` and ``redis_cpu_per_100k``)."""
    deltas = result.get("deltas") or 0
    if not deltas:
        result["cpu_per_100k"] = None
        return
    relay = result["cpu_s"] / deltas * 100_000
    result["relay_cpu_per_100k"] = relay
    if with_redis and "redis_cpu_s" in result:
        result["redis_cpu_per_100k"] = result["redis_cpu_s"] / deltas * 100_000
        result["cpu_per_100k"] = relay + result["redis_cpu_per_100k"]
    else:
        result["cpu_per_100k"] = relay


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every number over repeated runs; violations are summed, not medianed."""
    if len(results) == 1:
        return results[0]
    out: dict[str, Any] = _median_of(results)
    out["violations"] = {
        key: sum(r["violations"].get(key, 0) for r in results) for key in results[0]["violations"]
    }
    out["runs"] = results
    return out


def _median_of(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, dict):
        return {key: _median_of([v.get(key) for v in values]) for key in first}
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if numbers and len(numbers) == len(values):
        return statistics.median(numbers)
    return first


def _cpu_or_zero(pid: int) -> float:
    from bench.procs import cpu_seconds

    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


async def measure(
    target: Target,
    scenario: Scenario,
    ctx: RunContext,
    others: dict[str, Proc | None],
    *,
    profile: bool = False,
) -> dict[str, Any]:
    running = await target.start(ctx)
    redis_stats = ctx.redis_stats if target.redis else None
    try:
        warm = await run_load(warmup_for(scenario), running, ctx.jwt_secret, {})
        if sum(warm["violations"].values()):
            print(f"  warm-up violations: {warm['violations']}", file=sys.stderr)
        await asyncio.sleep(1.0)
        running.rss_before = running.rss()
        if profile and target.kind == "ours":
            async with Profiler(running.procs, ctx.log_dir, scenario.name):
                return await run_load(scenario, running, ctx.jwt_secret, others, redis_stats)
        return await run_load(scenario, running, ctx.jwt_secret, others, redis_stats)
    finally:
        await running.stop()


async def run(args: argparse.Namespace) -> int:
    scenarios_all = QUICK if args.quick else FULL
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    scenarios = [scenarios_all[name] for name in wanted]
    for item in args.override:
        key, _, value = item.partition("=")
        which, _, field_name = key.partition(".")
        scenarios = [
            dataclasses.replace(s, **{field_name: type(getattr(s, field_name))(value)})
            if s.name == which
            else s
            for s in scenarios
        ]
    targets_all = {t.name: t for t in all_targets(args.before_src)}
    extra_env = dict(item.split("=", 1) for item in args.env)
    targets: list[Target] = []
    for name in [t.strip() for t in args.targets.split(",") if t.strip()]:
        if name not in targets_all:
            raise SystemExit(f"unknown target {name!r} (before needs --before-src)")
        target = targets_all[name]
        if target.kind == "ours" and extra_env:
            target = Target(**{**target.__dict__, "env": {**target.env, **extra_env}})
        targets.append(target)
    name = args.name or ("quick" if args.quick else "scale" if args.scale else "latest")
    out: Path = args.out
    log_dir = out / "logs" / name
    if log_dir.exists():
        shutil.rmtree(log_dir)
    secret = secrets.token_urlsafe(32)
    pinning = None
    if args.pin_servers is not None:  # this process and the harness it starts: the others
        os.sched_setaffinity(0, os.sched_getaffinity(0) - args.pin_servers)
        pinning = {"servers": sorted(args.pin_servers), "harness": sorted(os.sched_getaffinity(0))}
    report: dict[str, Any] = {
        "name": name,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "machine": machine(),
        "cpus": pinning,
        "server_env": extra_env,
        "scenarios": {s.name: {**s.__dict__, "describe": s.describe()} for s in scenarios},
        "targets": {t.name: t.label for t in targets},
        "results": {t.name: {} for t in targets},
    }
    async with (
        bench_upstream(log_dir) as (upstream, upstream_url),
        bench_redis(log_dir) as (redis, redis_url, redis_stats),
    ):
        ctx = RunContext(
            upstream_url, secret, log_dir, redis_url, redis_stats, server_cpus=args.pin_servers
        )
        others = {"upstream": upstream, "redis": redis}
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for scenario in scenarios:
            for round_ in range(args.repeat):
                for target in targets:
                    if target.redis and redis_url is None:
                        print(f"skipping {target.name}: no redis-server", file=sys.stderr)
                        continue
                    stamp = time.strftime("%H:%M:%S")
                    label = f" (run {round_ + 1}/{args.repeat})" if args.repeat > 1 else ""
                    print(f"[{stamp}] {scenario.name} · {target.name}{label} …", flush=True)
                    result = await measure(target, scenario, ctx, others, profile=args.profile)
                    runs.setdefault((target.name, scenario.name), []).append(result)
                    _print_line(scenario, result)
        for (target_name, scenario_name), results in runs.items():
            report["results"][target_name][scenario_name] = combine(results)
    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["ratios"] = ratios(report)
    report["acceptance"] = acceptance(report)
    save(report, out, name)
    return 0


def save(report: dict[str, Any], out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    chart = write_chart(report, out / f"{name}.png")
    print_report(report)
    print(f"\nresult: {out / f'{name}.json'}" + (f"   chart: {chart}" if chart else ""))


def _print_line(scenario: Scenario, result: dict[str, Any]) -> None:
    bad = sum(result["violations"].values())
    if scenario.idle:
        print(f"    rss/conn {result['rss_per_conn_kb']:.1f} KiB, violations {bad}")
        return
    lat = result.get("latency_ms") or {}
    ttft = result.get("ttft_ms") or {}
    cpu = result.get("cpu_per_100k")
    redis = ""
    if result.get("redis_ops_per_token") is not None:
        redis = (
            f" + Redis {result['redis_cpu_s']:.2f}s, {result['redis_ops_per_token']:.2f} ops/token"
        )
    print(
        f"    {result['tokens_per_s']:.0f} tok/s, cpu {result['cpu_s']:.2f}s{redis}"
        f" ({cpu or 0:.2f}s/100k), ttft p99 {ttft.get('p99', 0):.1f} ms,"
        f" latency p50/p99 {lat.get('p50', 0):.1f}/{lat.get('p99', 0):.1f} ms,"
        f" events/req {result.get('events_per_request_mean', 0):.0f}, violations {bad}",
        flush=True,
    )
