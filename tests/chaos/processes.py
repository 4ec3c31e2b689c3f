"""Server processes for the fault tests: started as an operator would, killed for real."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import aiohttp

from tests.harness import API_KEY, JWT_SECRET, SpawnedServer, free_port

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
    port = free_port()
    extra = ("--host", "127.0.0.1", "--port", str(port)) if argv == PLAIN_UVICORN else ()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        *extra,
        env={**os.environ, "HOST": "127.0.0.1", "PORT": str(port), **env},
        cwd=os.getcwd(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    spawned = SpawnedServer(proc, port)

    async def pump() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            spawned.output.append(line.decode(errors="replace"))

    spawned._pump = asyncio.ensure_future(pump())  # type: ignore[attr-defined]
    deadline = time.monotonic() + ready_timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                break
            try:
                async with http.get(f"{spawned.url}/health") as resp:
                    if resp.status == 200:
                        return spawned
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    if proc.returncode is None:
        proc.kill()
    await proc.wait()
    raise RuntimeError("server did not start:\n" + "".join(spawned.output))


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
