"""Server processes for the fault tests: started as an operator would, killed for real."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from bench.procs import free_port
from tests.harness import API_KEY, JWT_SECRET, SpawnedServer, spawn_server

PLAIN_UVICORN = ("-m", "uvicorn", "server.main:app")  # the other supported start command
PYTHON_M_SERVER = ("-m", "server")


def node_env(upstream_url: str, **env: str) -> dict[str, str]:
    return {
        "JWT_SECRET": JWT_SECRET,
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": upstream_url,
        "SHUTDOWN_GRACE_S": "1",
        "LOG_LEVEL": "warning",
        **env,
    }


async def start(
    env: dict[str, str], argv: Sequence[str] = PYTHON_M_SERVER, ready_timeout: float = 30
) -> SpawnedServer:
    """A server process with ``env`` (over this one's), ready when ``/health`` answers."""
    extra: tuple[str, ...] = ()
    if tuple(argv) == PLAIN_UVICORN:  # uvicorn takes its address from the command line
        port = free_port()
        extra = ("--host", "127.0.0.1", "--port", str(port))
        env = {**env, "PORT": str(port)}
    return await spawn_server(env, command=tuple(argv), args=extra, ready_timeout=ready_timeout)


@asynccontextmanager
async def running(
    env: dict[str, str], argv: Sequence[str] = PYTHON_M_SERVER
) -> AsyncIterator[SpawnedServer]:
    node = await start(env, argv)
    try:
        yield node
    finally:
        if node.proc.returncode is None:
            node.proc.kill()
        await node.proc.wait()
