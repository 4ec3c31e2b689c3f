"""A server for the official protocol test suites: ours, or plain python-socketio.

``python -m tests.conformance.server {engineio,socketio} {ours,plain}`` serves on a free
loopback port and prints ``PORT <n>`` once it listens.

``ours`` is the transport layer the relay runs, from the same classes ``create_app`` and
``python -m server`` use: ``RelayEngineServer`` (Engine.IO suite) or ``RelayServer`` with
the in-memory manager and the orjson shim (Socket.IO suite), under uvicorn with our HTTP
and WebSocket protocols (``uvicorn_config``).  ``plain`` is python-engineio's
``AsyncServer`` or python-socketio's ``AsyncServer`` of the locked version under stock
uvicorn (httptools, websockets-sansio).  Both get the handlers and settings the suites'
READMEs give for the JavaScript reference server: pingInterval 300 ms, pingTimeout
200 ms, maxPayload 1e6, CORS for any origin, connectTimeout 1 s (Socket.IO), an echo
(Engine.IO), ``auth`` / ``message-back`` / ``message-with-ack`` (Socket.IO).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any

import engineio
import socketio
import uvicorn

from events.core.tails import TailRegistry
from events.transport.internals.engineio_socket import RelayEngineServer
from events.transport.internals.socketio_managers import MemoryManager
from events.transport.internals.socketio_server import RelayServer
from server.jsonshim import OrjsonShim
from server.serve import uvicorn_config
from server.settings import Settings

# The suites' settings (their READMEs' reference servers).
PING_INTERVAL_S = 0.3
PING_TIMEOUT_S = 0.2
MAX_PAYLOAD = 1_000_000
CONNECT_TIMEOUT_S = 1.0


def engineio_app(kind: str) -> Any:
    options: dict[str, Any] = {
        "async_mode": "asgi",
        "ping_interval": PING_INTERVAL_S,
        "ping_timeout": PING_TIMEOUT_S,
        "max_http_buffer_size": MAX_PAYLOAD,
        "cors_allowed_origins": "*",
    }
    if kind == "ours":
        # as RelayServer sets up its Engine.IO server: a connection's packets in order
        eio: engineio.AsyncServer = RelayEngineServer(async_handlers=False, **options)
    else:
        eio = engineio.AsyncServer(**options)

    @eio.on("message")  # type: ignore[untyped-decorator]
    async def echo(sid: str, data: Any) -> None:
        await eio.send(sid, data)

    return engineio.ASGIApp(eio, engineio_path="engine.io")


def socketio_app(kind: str) -> Any:
    options: dict[str, Any] = {
        "async_mode": "asgi",
        "ping_interval": PING_INTERVAL_S,
        "ping_timeout": PING_TIMEOUT_S,
        "max_http_buffer_size": MAX_PAYLOAD,
        "cors_allowed_origins": "*",
    }
    if kind == "ours":
        sio: socketio.AsyncServer = RelayServer(
            connect_timeout_s=CONNECT_TIMEOUT_S,
            client_manager=MemoryManager(TailRegistry()),
            json=OrjsonShim,
            **options,
        )
    else:
        sio = socketio.AsyncServer(**options)

    def greet(namespace: str) -> Any:
        async def connect(sid: str, environ: Any, auth: Any) -> None:
            # After the CONNECT packet, as the JavaScript server sends it.
            payload = auth if auth is not None else {}

            async def send_auth() -> None:
                await sio.emit("auth", payload, to=sid, namespace=namespace)

            sio.start_background_task(send_auth)

        return connect

    sio.on("connect", greet("/"))
    sio.on("connect", greet("/custom"), namespace="/custom")

    @sio.on("message")  # type: ignore[untyped-decorator]
    async def message(sid: str, *args: Any) -> None:
        await sio.emit("message-back", args, to=sid)

    @sio.on("message-with-ack")  # type: ignore[untyped-decorator]
    async def message_with_ack(sid: str, *args: Any) -> Any:
        return args

    return socketio.ASGIApp(sio, socketio_path="socket.io")


def config(kind: str, app: Any) -> uvicorn.Config:
    if kind == "ours":
        settings = Settings(host="127.0.0.1", port=0, max_frame_bytes=MAX_PAYLOAD)
        cfg = uvicorn_config(settings, app)
    else:
        cfg = uvicorn.Config(app, http="httptools", ws="websockets-sansio", log_config=None)
    cfg.access_log = False
    cfg.lifespan = "off"
    return cfg


async def serve(suite: str, kind: str) -> None:
    app = engineio_app(kind) if suite == "engineio" else socketio_app(kind)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(config(kind, app))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            return
        await asyncio.sleep(0.01)
    print("PORT", sock.getsockname()[1], flush=True)
    await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("suite", choices=["engineio", "socketio"])
    parser.add_argument("kind", choices=["ours", "plain"])
    args = parser.parse_args()
    asyncio.run(serve(args.suite, args.kind))


if __name__ == "__main__":
    main()
