"""Test harness: a real uvicorn server on a loopback port, and recording clients."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import jwt
import socketio
import uvicorn

from bench.procs import free_port
from server.app import RelayApp, create_app
from server.extensions import Extension
from server.serve import uvicorn_config
from server.settings import Settings

JWT_SECRET = "test-secret-0123456789-abcdefghijklmnop"
API_KEY = "sk-or-test-key-SECRET-0123456789"
# The start command of the container image (Dockerfile CMD); spawn_server runs the same.
START_COMMAND = ("python", "-m", "server")
STREAM_EVENTS = ("token", "reasoning", "tool_call")  # one seq across them (protocol v2)


_DB_DIR: list[str] = []


def scratch_database_url() -> str:
    """A fresh SQLite database in this test run's scratch directory (removed at exit)."""
    import atexit
    import secrets
    import shutil
    import tempfile

    if not _DB_DIR:
        _DB_DIR.append(tempfile.mkdtemp(prefix="llm-relay-test-db-"))
        atexit.register(shutil.rmtree, _DB_DIR[0], True)
    return f"sqlite+aiosqlite:///{_DB_DIR[0]}/{secrets.token_hex(6)}.db"


def base_settings(upstream_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        # Each app its own store: history of a room in one test never reaches another.
        "database_url": scratch_database_url(),
        "jwt_secret": JWT_SECRET,
        "openrouter_api_key": API_KEY,
        "openrouter_base_url": upstream_url,
        "upstream_connect_timeout_s": 2,
        "upstream_first_token_timeout_s": 5,
        "upstream_idle_timeout_s": 5,
        "upstream_total_timeout_s": 60,
        "shutdown_grace_s": 1,
        "host": "127.0.0.1",
        "port": 0,
    }
    values.update(overrides)
    return Settings(**values)


def make_token(
    sub: str = "alice",
    *,
    ttl: float = 3600,
    secret: str = JWT_SECRET,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, secret, algorithm=algorithm)


@dataclass
class RunningServer:
    app: RelayApp
    settings: Settings
    server: uvicorn.Server
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@asynccontextmanager
async def run_server(
    settings: Settings,
    *,
    extensions: Sequence[Extension] | None = None,
    access_log: bool = False,
) -> AsyncIterator[RunningServer]:
    app = create_app(settings, extensions)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(settings, app)
    config.access_log = access_log
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server exited during start-up")
        await asyncio.sleep(0.005)
    try:
        yield RunningServer(app, settings, server, port)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


@dataclass
class Recorder:
    """A python-socketio client that records every event it receives, in order."""

    client: socketio.AsyncClient = field(
        default_factory=lambda: socketio.AsyncClient(reconnection=False)
    )
    events: list[tuple[str, Any]] = field(default_factory=list)
    connect_error: Any = None

    def __post_init__(self) -> None:
        self._changed = asyncio.Event()

        @self.client.on("*")  # type: ignore[misc]
        async def _any(event: str, data: Any = None) -> None:
            self._record(event, data)

        @self.client.on("connect_error")  # type: ignore[misc]
        async def _connect_error(data: Any = None) -> None:
            self.connect_error = data
            self._record("connect_error", data)

        @self.client.on("disconnect")  # type: ignore[misc]
        async def _disconnect(*_args: Any) -> None:
            self._record("disconnect", None)

    def _record(self, event: str, data: Any) -> None:
        self.events.append((event, data))
        self._changed.set()

    async def connect(
        self,
        url: str,
        token: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        transports: list[str] | None = None,
        auth: Any = None,
    ) -> None:
        if auth is None and token is not None:
            auth = {"token": token}
        await self.client.connect(
            url,
            auth=auth,
            headers=headers or {},
            transports=transports or ["websocket"],
            wait_timeout=5,
        )

    async def call(self, event: str, data: Any, timeout: float = 5) -> Any:
        return await self.client.call(event, data, timeout=timeout)

    async def wait_for(
        self, predicate: Callable[[str, Any], bool], timeout: float = 10
    ) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event, data in self.events[seen:]:
                if predicate(event, data):
                    return event, data
            seen = len(self.events)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching event; got {self.events[-5:]!r}")
            self._changed.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_event(self, name: str, timeout: float = 10) -> Any:
        return (await self.wait_for(lambda e, _d: e == name, timeout))[1]

    async def terminal(self, request_id: str, timeout: float = 10) -> tuple[str, Any]:
        return await self.wait_for(
            lambda e, d: (
                e in ("done", "error") and isinstance(d, dict) and d.get("request_id") == request_id
            ),
            timeout,
        )

    def of(self, request_id: str) -> list[tuple[str, Any]]:
        return [
            (e, d)
            for e, d in self.events
            if isinstance(d, dict) and d.get("request_id") == request_id
        ]

    def tokens(self, request_id: str) -> list[dict[str, Any]]:
        return [d for e, d in self.of(request_id) if e == "token"]

    def text(self, request_id: str) -> str:
        return "".join(t["content"] for t in self.tokens(request_id))

    async def close(self) -> None:
        if self.client.connected:
            await self.client.disconnect()

    async def leave(self) -> None:
        """A deliberate disconnect the server sees as one (the DISCONNECT packet first).

        python-socketio's ``disconnect()`` closes the socket without waiting for its
        DISCONNECT packet to be written, so a server may see only a lost transport.
        """
        from socketio import packet

        sid = self.client.get_sid()
        await self.client._send_packet(packet.Packet(packet.DISCONNECT, namespace="/"))
        self._sent_disconnect = sid

    async def drop(self) -> None:
        """Lose the transport without a DISCONNECT packet (network drop)."""
        eio = self.client.eio
        if eio.ws is not None:
            await eio.ws.close()


def assert_clean_stream(rec: Recorder, request_id: str) -> tuple[str, dict[str, Any]]:
    """Invariants 1 and 2: gapless seq from 0 across the stream events, one terminal event,
    nothing after it."""
    events = rec.of(request_id)
    terminals = [i for i, (e, _d) in enumerate(events) if e in ("done", "error")]
    assert len(terminals) == 1, events
    assert terminals[0] == len(events) - 1, events
    seqs = [d["seq"] for e, d in events if e in STREAM_EVENTS]
    assert seqs == list(range(len(seqs))), seqs
    return events[-1]


@dataclass
class SpawnedServer:
    """``python -m server`` in its own process, as an operator would run it."""

    proc: asyncio.subprocess.Process
    port: int
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self, sig: int = 15, timeout: float = 30) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), timeout)


async def spawn_server(
    env: dict[str, str],
    *,
    args: tuple[str, ...] = (),
    ready_timeout: float = 20,
    command: tuple[str, ...] = START_COMMAND[1:],
) -> SpawnedServer:
    """Start the server (``python -m server``, or ``python <command>``) with ``env`` (added to
    this process's) and wait until ``/health`` answers."""
    import os
    import sys

    import aiohttp

    port = int(env["PORT"]) if "PORT" in env else free_port()
    full_env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": scratch_database_url(),
        **env,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *command,
        *args,
        env=full_env,
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
                raise RuntimeError("server exited:\n" + "".join(spawned.output))
            try:
                async with http.get(f"{spawned.url}/health") as resp:
                    if resp.status == 200:
                        return spawned
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start:\n" + "".join(spawned.output))
