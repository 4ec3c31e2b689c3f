"""The benchmark's CPU reading: finer than the kernel's 10 ms clock ticks."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.procs import cpu_seconds


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_seconds_of_this_process_matches_process_time() -> None:
    before = time.process_time()
    ours = cpu_seconds(os.getpid())
    after = time.process_time()
    assert before - 0.001 <= ours <= after + 0.001


def test_cpu_seconds_resolves_less_than_a_clock_tick() -> None:
    first = cpu_seconds(os.getpid())
    _burn(0.002)
    spent = cpu_seconds(os.getpid()) - first
    assert 0.002 <= spent < 0.01  # a tick count would read 0 or 0.01


def test_cpu_seconds_of_a_child_counts_its_work() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.2\n"
            "while time.process_time() < end: pass\ntime.sleep(30)",
        ]
    )
    try:
        deadline = time.monotonic() + 20
        spent = 0.0
        while time.monotonic() < deadline and spent < 0.2:
            time.sleep(0.05)
            spent = cpu_seconds(child.pid)
        assert 0.2 <= spent < 1.0
    finally:
        child.kill()
        child.wait()
