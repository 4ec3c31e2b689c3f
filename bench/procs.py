"""Processes of a benchmark run and what /proc says about them."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import orjson

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _libc_cpu_clock() -> Any:
    """glibc's ``clock_getcpuclockid``, or None (then ``/proc`` ticks are read)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.clock_getcpuclockid
    except (OSError, AttributeError):
        return None


_CPU_CLOCK = _libc_cpu_clock()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads.

    Read from the process's CPU-time clock (nanoseconds); ``/proc/<pid>/stat`` counts in
    clock ticks (10 ms), an error of a few per cent on a run of half a second.
    """
    if _CPU_CLOCK is not None:
        clock = ctypes.c_int()
        if _CPU_CLOCK(pid, ctypes.byref(clock)) == 0:
            with contextlib.suppress(OSError):
                return time.clock_gettime(clock.value)
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def syscalls(pid: int) -> tuple[int, int]:
    """Read- and write-family system calls of a process so far (``/proc/<pid>/io``), all its
    threads; (0, 0) where the file cannot be read."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return (0, 0)
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return (int(fields.get("syscr", 0)), int(fields.get("syscw", 0)))


def rss_kb(pid: int) -> int:
    """Resident set size (``/proc/<pid>/statm``), in KiB."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_KB


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port that was free a moment ago and that no earlier call returned (the
    bench's servers and the tests' own).

    The kernel may hand the same port to two ``bind(0)`` calls in a row once the first
    socket is closed; a server started on a port another one already holds fails to bind
    while its readiness probe is answered by the other.
    """
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("the benchmark needs Node.js (node) on PATH")
    return node


@dataclass
class Proc:
    """A child process whose output goes to a log file."""

    name: str
    proc: asyncio.subprocess.Process
    log: TextIO | None = None
    port: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_kb(self.pid)

    def syscalls(self) -> tuple[int, int]:
        return syscalls(self.pid)

    async def stop(self, grace_s: float = 20) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self.log is not None:
            self.log.close()


def _open_log(log_dir: Path, name: str, argv: list[str]) -> TextIO:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir / f"{name}.log").open("a")
    log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(argv)}\n")
    log.flush()
    return log


async def start(
    name: str,
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log_dir: Path,
    cpus: frozenset[int] | None = None,
) -> Proc:
    """Start ``argv``, its output in ``log_dir/<name>.log``; on ``cpus`` only, if given
    (set in the child before it executes ``argv``: its threads and children inherit it)."""
    log = _open_log(log_dir, name, argv)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, **env},
        cwd=cwd,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
        preexec_fn=None if cpus is None else functools.partial(os.sched_setaffinity, 0, cpus),
    )
    return Proc(name, proc, log)


async def wait_http(url: str, proc: Proc, within_s: float = 30) -> None:
    """Wait until ``url`` answers 200 (the process must stay alive meanwhile)."""
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.proc.returncode is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.proc.returncode}; see its log")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not answer {url} in {within_s}s")


async def wait_port(port: int, proc: Proc, within_s: float = 15) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc.proc.returncode is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.proc.returncode}; see its log")
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise RuntimeError(f"{proc.name} did not listen on {port} in {within_s}s")


class LoadRun:
    """One run of the Node load generator, driven line by line over stdio."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, script: Path, config: dict[str, Any], cwd: Path) -> LoadRun:
        proc = await asyncio.create_subprocess_exec(
            node_binary(),
            str(script),
            orjson.dumps(config).decode(),
            cwd=cwd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            limit=1 << 24,
        )
        return cls(proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def read(self, within_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), within_s)
            if not line:
                raise RuntimeError("the load generator exited early")
            if line.startswith(b"{"):
                result: dict[str, Any] = orjson.loads(line)
                return result

    async def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def close(self) -> None:
        if self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def stopping_on_sigterm(work: Awaitable[int]) -> int:
    """Await ``work`` with SIGTERM cancelling it, as Ctrl-C does.

    The processes a run starts are stopped by the ``finally`` blocks that started them; a
    SIGTERM left to its default action (``timeout``, a CI runner, ``kill``) ends this
    process at once and leaves them running (the upstream, Redis, servers under test).
    """
    task = asyncio.current_task()
    assert task is not None, "stopping_on_sigterm outside a task"
    loop = asyncio.get_running_loop()
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        return await work
    except asyncio.CancelledError:
        if not terminated:
            raise  # Ctrl-C (asyncio.run turns it into KeyboardInterrupt) or another cancel
        print("terminated: the processes of the run were stopped", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
