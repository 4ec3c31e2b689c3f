"""A Redis for the tests: the machine's on 127.0.0.1:6379 if it answers, else our own.

On a machine without Redis, ``redis-server`` (if installed) is started on a free port for
the session; with neither, tests that need Redis are skipped with that reason.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench.procs import free_port

DEFAULT_URL = "redis://127.0.0.1:6379"


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server_process(port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Our own ``redis-server`` on a free port (also for tests that stop and restart it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="llm-relay-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _answers("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def available_redis() -> Iterator[str | None]:
    """The URL of a Redis to use, or None (with nothing installed)."""
    if _answers("127.0.0.1", 6379):
        yield DEFAULT_URL
        return
    if shutil.which("redis-server") is None:
        yield None
        return
    with redis_server_process() as (url, _proc):
        yield url
