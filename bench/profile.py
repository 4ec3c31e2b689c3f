"""Sampling profiles of our server during a scenario (``python -m bench --profile``).

py-spy attaches to each server process after the warm-up and writes collapsed stacks
(``logs/<run>/profile-<process>-<scenario>.txt``); ``python -m bench.profile FILE`` prints
the functions with the most samples, by self time and by inclusive time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench.procs import Proc


class Profiler:
    def __init__(self, procs: list[Proc], out_dir: Path, tag: str) -> None:
        self.procs = procs
        self.out_dir = out_dir
        self.tag = tag
        self._spies: list[asyncio.subprocess.Process] = []

    async def __aenter__(self) -> Profiler:
        beside = Path(sys.executable).parent / "py-spy"
        binary = str(beside) if beside.exists() else shutil.which("py-spy")
        if binary is None:
            raise SystemExit("--profile needs py-spy (pip install -e '.[bench]')")
        for proc in self.procs:
            out = self.out_dir / f"profile-{proc.name}-{self.tag}.txt"
            spy = await asyncio.create_subprocess_exec(
                binary,
                "record",
                "--pid",
                str(proc.pid),
                *(["--native"] if os.environ.get("BENCH_PROFILE_NATIVE") else ["--nonblocking"]),
                "--rate",
                "250" if os.environ.get("BENCH_PROFILE_NATIVE") else "1000",
                "--format",
                "raw",
                "--output",
                str(out),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            self._spies.append(spy)
        await asyncio.sleep(0.5)  # attached
        return self

    async def __aexit__(self, *exc: object) -> None:
        for spy in self._spies:
            with contextlib.suppress(ProcessLookupError):
                spy.send_signal(signal.SIGINT)
        for spy in self._spies:
            try:
                await asyncio.wait_for(spy.wait(), 20)
            except TimeoutError:
                spy.kill()


def summarize(path: Path, top: int = 30) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{path.name}: {total} samples", "", "self:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    for path in args.files:
        print(summarize(path, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
