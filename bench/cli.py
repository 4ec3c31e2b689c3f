"""``python -m bench``: run the scenarios against every target, print the table, save JSON + PNG.

One run starts the bench upstream (Node), then for each target and scenario a fresh server,
a short warm-up, and the Node load generator; CPU and RSS come from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from bench.procs import stopping_on_sigterm
from bench.run import run
from bench.targets import BENCH_DIR, DEFAULT_TARGETS, QUICK_TARGETS, SCALE_TARGETS, all_targets


def cpu_list(text: str) -> frozenset[int]:
    try:
        cpus = frozenset(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of CPU numbers: {text!r}") from None
    allowed = os.sched_getaffinity(0)
    if not cpus or not cpus < allowed:
        raise argparse.ArgumentTypeError(
            f"the servers need some of CPUs {sorted(allowed)}, and the rest at least one"
        )
    return cpus


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small scenarios (a smoke run)")
    parser.add_argument("--scenarios", help="comma-separated: burst,paced,idle (default: all)")
    names = ",".join(t.name for t in all_targets(Path(".")))
    parser.add_argument(
        "--targets",
        help=f"comma-separated, from: {names} (default: {','.join(DEFAULT_TARGETS)};"
        f" with --quick {','.join(QUICK_TARGETS)})",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help=f"the scale-out run: targets {','.join(SCALE_TARGETS)}, scenarios burst,paced"
        " (unless --targets/--scenarios are given)",
    )
    parser.add_argument(
        "--before-src", type=Path, help="a checkout of the server before tuning (target 'before')"
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="result folder")
    parser.add_argument("--name", help="result file name (default: latest, or quick)")
    parser.add_argument(
        "--repeat",
        type=int,
        help="runs per target and scenario, interleaved; the table shows medians"
        " (default: 3, with --quick 1)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help="scenario.field=value, e.g. paced.tokens=50 (experiments)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy profiles of our server (see logs/)"
    )
    parser.add_argument(
        "--env", action="append", default=[], help="NAME=VALUE for our server (repeatable)"
    )
    parser.add_argument(
        "--pin-servers",
        metavar="CPUS",
        type=cpu_list,
        help="comma-separated CPU numbers: the servers under test run on these only, the"
        " upstream, load generator and Redis on the others (default: all share all CPUs)",
    )
    args = parser.parse_args(argv)
    if args.scenarios is None:
        args.scenarios = "burst,paced" if args.scale else "burst,paced,idle"
    if args.targets is None:
        chosen = SCALE_TARGETS if args.scale else QUICK_TARGETS if args.quick else DEFAULT_TARGETS
        args.targets = ",".join(chosen)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(stopping_on_sigterm(run(args)))
