"""The benchmark's processes: CPU read finer than the kernel's 10 ms clock ticks, and a
terminated run stops what it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.procs import cpu_seconds, start


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


_RUN_UNTIL_TERMINATED = """
import asyncio, sys
from pathlib import Path
from bench.procs import start, stopping_on_sigterm

async def work() -> int:
    logs = Path(sys.argv[1])
    child = await start("sleeper", ["sleep", "60"], env={}, cwd=logs, log_dir=logs)
    try:
        print(child.pid, flush=True)
        await asyncio.sleep(60)
        return 0
    finally:
        await child.stop()

raise SystemExit(asyncio.run(stopping_on_sigterm(work())))
"""


def test_sigterm_stops_the_processes_a_run_started(tmp_path: Path) -> None:
    """``timeout`` or a CI runner ends a bench run with SIGTERM: the run's own processes
    (here a ``sleep``) are stopped by their ``finally``, not left running."""
    run = subprocess.Popen(
        [sys.executable, "-c", _RUN_UNTIL_TERMINATED, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert run.stdout is not None
    sleeper = int(run.stdout.readline())
    run.send_signal(signal.SIGTERM)
    _out, err = run.communicate(timeout=30)
    assert run.returncode == 128 + signal.SIGTERM, err
    assert "terminated" in err
    with pytest.raises(ProcessLookupError):
        os.kill(sleeper, 0)  # stopped and reaped by the run, not orphaned


async def test_a_process_started_on_some_cpus_runs_only_there(tmp_path: Path) -> None:
    """``--pin-servers``: the servers under test get CPUs of their own."""
    ours = os.sched_getaffinity(0)
    one = frozenset({max(ours)})
    proc = await start("sleeper", ["sleep", "30"], env={}, cwd=tmp_path, log_dir=tmp_path, cpus=one)
    try:
        assert os.sched_getaffinity(proc.pid) == one
        assert os.sched_getaffinity(0) == ours  # set in the child only
    finally:
        await proc.stop()
