"""The fence's contract: every library name an override hooks is still there, as it was read.

events/transport/internals/ overrides private methods of python-engineio 4.15.1,
python-socketio 5.18.1 and uvicorn 0.55.0 (uv.lock).  A new release may rename a hooked
method, change its signature, or change the code an override copies; each test here is
named after its override and fails naming it, so the override is re-read against the new
release instead of breaking the server at run time.  ``make test-latest`` runs these
against the newest releases pyproject.toml allows.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import re
import types
from typing import Any

import engineio
import pytest
import socketio
import uvicorn
from engineio.async_drivers import asgi as eio_asgi
from engineio.async_socket import AsyncSocket
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from socketio.async_pubsub_manager import AsyncPubSubManager
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.websockets import websockets_sansio_impl

from events.core.tails import TailRegistry
from events.transport.internals import (
    engineio_asgi,
    engineio_socket,
    pubsub_batch,
    pubsub_outbox,
    socketio_managers,
    socketio_server,
    uvicorn_config,
    uvicorn_http,
    uvicorn_server,
    uvicorn_websocket,
)
from events.transport.internals.packet_queue import PacketQueue

WRITTEN_FOR = {
    "engineio": "python-engineio 4.15.1",
    "socketio": "python-socketio 5.18.1",
    "uvicorn": "uvicorn 0.55.0",
}


def hooked(override: str, module: Any, owner: Any, name: str, signature: str) -> Any:
    """``owner.name`` must exist with ``signature``, else fail naming the override."""
    owner_name = (
        owner.__name__ if inspect.ismodule(owner) else f"{owner.__module__}.{owner.__qualname__}"
    )
    library = owner_name.split(".")[0]
    where = f"{owner_name}.{name}"
    fence = module.__name__.replace(".", "/") + ".py"
    attr = getattr(owner, name, None)
    if attr is None:
        pytest.fail(
            f"override {override}: {where} is gone; re-read {fence} "
            f"(written against {WRITTEN_FOR[library]})"
        )
    actual = str(inspect.signature(attr))
    if actual != signature:
        pytest.fail(
            f"override {override}: {where} changed signature: {actual} (was {signature}); "
            f"re-read {fence} (written against {WRITTEN_FOR[library]})"
        )
    return attr


def copied(override: str, function: Any, sha256: str) -> None:
    """Code an override copies must be the code it was copied from."""
    digest = hashlib.sha256(inspect.getsource(function).encode()).hexdigest()
    if digest != sha256:
        pytest.fail(
            f"override {override}: {function.__module__}.{function.__qualname__} changed "
            f"(source sha256 {digest}); our copy may miss a fix: compare it with the new "
            "release, then update the copy and this hash"
        )


def calls(override: str, function: Any, *names: str) -> None:
    """The library still calls the hooked names from ``function``."""
    source = inspect.getsource(function)
    for name in names:
        if name not in source:
            pytest.fail(
                f"override {override}: {function.__module__}.{function.__qualname__} no "
                f"longer calls {name}; the override would never run"
            )


# --- python-engineio ------------------------------------------------------------------


def test_relay_socket() -> None:
    """RelaySocket: the WebSocket loop (copied upgrade handshake), send, ping timer."""
    module = engineio_socket
    hooked("RelaySocket", module, AsyncSocket, "_websocket_handler", "(self, ws)")
    hooked("RelaySocket", module, AsyncSocket, "send", "(self, pkt)")
    hooked("RelaySocket", module, AsyncSocket, "schedule_ping", "(self)")
    hooked("RelaySocket", module, AsyncSocket, "receive", "(self, pkt)")
    hooked(
        "RelaySocket", module, AsyncSocket, "close", "(self, wait=True, abort=False, reason=None)"
    )
    copied(
        "RelaySocket",
        AsyncSocket._websocket_handler,
        "27f120df4d717a24478b7b0f7389ce19eea8a881dd07e2c81fb1cf2493e006a5",
    )
    copied(
        "RelaySocket",
        AsyncSocket.send,
        "0437276ccba7ab091471e29f4bc6a0f178da7b16a590c707d6c69a97609e6d14",
    )


def test_relay_engine_server() -> None:
    """RelayEngineServer: swaps in RelaySocket on connect, PacketQueue, the ASGI drivers."""
    module = engineio_socket
    hooked(
        "RelayEngineServer", module, engineio.AsyncServer, "_trigger_event",
        "(self, event, *args, **kwargs)",
    )  # fmt: skip
    hooked(
        "RelayEngineServer", module, engineio.AsyncServer, "create_queue",
        "(self, *args, **kwargs)",
    )  # fmt: skip
    calls("RelayEngineServer", engineio.AsyncServer._handle_connect, "_trigger_event(")
    server = engineio_socket.RelayEngineServer(async_mode="asgi")
    drivers = server._async
    assert drivers["translate_request"] is engineio_asgi.translate_request, (
        "override RelayEngineServer: python-engineio's driver table has no translate_request"
    )
    assert drivers["websocket"] is engineio_asgi.StrictWebSocket, (
        "override RelayEngineServer: python-engineio's driver table has no websocket"
    )


def test_translate_request() -> None:
    hooked(
        "translate_request", engineio_asgi, eio_asgi, "translate_request", "(scope, receive, send)"
    )
    copied(
        "translate_request",
        eio_asgi.translate_request,
        "39e74733f1fe46aa20e9ba2b651834a108bced1acee44c5a76927173dd7b09ff",
    )


def test_strict_websocket() -> None:
    hooked("StrictWebSocket", engineio_asgi, eio_asgi.WebSocket, "wait", "(self)")
    # __call__ keeps the environ: its ASGI scope offers the transport's abort (invariant 7)
    hooked("StrictWebSocket", engineio_asgi, eio_asgi.WebSocket, "__call__", "(self, environ)")
    assert "asgi.scope" in inspect.getsource(eio_asgi.translate_request), (
        "override StrictWebSocket/RelaySocket.cut_off: the environ no longer holds the scope"
    )


def test_relay_socket_cut_off() -> None:
    """RelaySocket.cut_off/close, RelayEngineServer.watch_writes/cut_off_all (invariant 7):
    python-engineio closes a lost transport with ``close(wait=False, abort=True)`` (which
    our ``close`` forces for a cut-off socket); a new connection still passes
    ``_trigger_event("connect")``, which starts the watchdog over ``server.sockets``."""
    calls("RelaySocket.close", AsyncSocket._websocket_handler, "self.close(wait=False, abort=True")
    calls("RelayEngineServer.watch_writes", engineio.AsyncServer._handle_connect, "'connect'")
    assert isinstance(engineio.AsyncServer(async_mode="asgi").sockets, dict), (
        "override RelayEngineServer.watch_writes: python-engineio has no server.sockets"
    )


async def test_relay_engine_server_hands_out_relay_sockets() -> None:
    """Behaviour: an ASGI polling handshake through the public ``handle_request``."""
    server = engineio_socket.RelayEngineServer(async_mode="asgi", ping_interval=7)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/engine.io/",
        "query_string": b"EIO=4&transport=polling",
        "headers": [(b"host", b"x")],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await server.handle_request(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert body.startswith(b'0{"sid"'), body
    assert b'"pingInterval":7000' in body
    (sock,) = server.sockets.values()
    assert type(sock) is engineio_socket.RelaySocket, "override RelayEngineServer: no swap"
    assert isinstance(sock.queue, PacketQueue)


# --- python-socketio ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "signature"),
    [
        ("_handle_eio_connect", "(self, eio_sid, environ)"),
        ("_handle_eio_message", "(self, eio_sid, data)"),
        ("_handle_event", "(self, eio_sid, namespace, id, data)"),
        ("_handle_connect", "(self, eio_sid, namespace, data)"),
        ("_handle_disconnect", "(self, eio_sid, namespace, reason=None)"),
        ("_handle_ack", "(self, eio_sid, namespace, id, data)"),
        ("_send_packet", "(self, eio_sid, pkt)"),
        ("_engineio_server_class", "(self)"),
    ],
)
def test_relay_server(name: str, signature: str) -> None:
    hooked("RelayServer", socketio_server, socketio.AsyncServer, name, signature)


def test_relay_server_builds_its_engineio_server_through_the_hook() -> None:
    sio = socketio_server.RelayServer(async_mode="asgi")
    assert isinstance(sio.eio, engineio_socket.RelayEngineServer), (
        "override RelayServer._engineio_server_class: python-socketio no longer calls it"
    )
    calls("RelayServer", socketio.AsyncServer._handle_eio_message, "_handle_connect(")


def test_memory_manager() -> None:
    hooked(
        "MemoryManager.emit", socketio_managers, socketio.AsyncManager, "emit",
        "(self, event, data, namespace, room=None, skip_sid=None, callback=None, to=None, "
        "**kwargs)",
    )  # fmt: skip


async def test_emit_here_reads_the_managers_rooms_as_sid_to_eio_sid() -> None:
    """Behaviour: ``emit_here`` walks ``manager.rooms[namespace][room]`` (sid → eio_sid)."""
    sio = socketio.AsyncServer(
        async_mode="asgi", client_manager=socketio_managers.MemoryManager(TailRegistry())
    )
    manager = sio.manager
    manager.initialize()
    sid = await manager.connect("eio-1", "/")
    await manager.enter_room(sid, "/", "room-a")
    assert manager.rooms["/"]["room-a"] == {sid: "eio-1"}, (
        "override emit_here: python-socketio's manager.rooms changed shape"
    )
    assert manager.sid_from_eio_sid("eio-1", "/") == sid


@pytest.mark.parametrize(
    ("name", "signature"),
    [
        (
            "emit",
            "(self, event, data, namespace=None, room=None, skip_sid=None, callback=None, "
            "to=None, **kwargs)",
        ),
        ("_publish", "(self, data)"),
        ("_listen", "(self)"),
        ("_redis_listen_with_retries", "(self)"),
        ("_handle_emit", "(self, message)"),
    ],
)
def test_redis_manager(name: str, signature: str) -> None:
    hooked(f"RedisManager.{name}", socketio_managers, socketio.AsyncRedisManager, name, signature)


def test_redis_manager_outbox_gets_what_emit_publishes() -> None:
    """RedisManager._publish → pubsub_outbox.Outbox: python-socketio publishes dicts with
    ``method`` and ``data`` (the outbox reads a stream's ``room``/``request_id`` there)."""
    source = inspect.getsource(AsyncPubSubManager.emit)
    for name in ("'method': 'emit'", "'data': data", "'room': room"):
        if name not in source:
            pytest.fail(
                f"override RedisManager._publish / {pubsub_outbox.__name__}: "
                f"AsyncPubSubManager.emit no longer publishes {name}"
            )
    calls("RedisManager.remote_events", AsyncPubSubManager._thread, "_handle_emit(")


def test_redis_manager_hooks_are_still_called() -> None:
    redis = socketio.AsyncRedisManager
    calls("RedisManager._redis_listen_with_retries", redis._listen, "_redis_listen_with_retries(")
    calls("RedisManager._publish", AsyncPubSubManager.emit, "self._publish(")
    calls("RedisManager._handle_emit", AsyncPubSubManager._thread, "_handle_emit(")
    calls("RedisManager._listen", AsyncPubSubManager._thread, "self._listen(")


async def test_pubsub_thread_takes_decoded_messages_and_ignores_a_batch() -> None:
    """RedisManager._listen (pubsub_batch.py) yields a batch's messages as dicts; python-socketio's
    ``_thread`` must dispatch a dict as it is, and skip an unknown ``method`` (so a node that
    does not read batches ignores one instead of failing)."""
    handled: list[dict[str, Any]] = []
    emit = {"method": "emit", "event": "e", "data": [{}], "host_id": "other"}

    class Probe(AsyncPubSubManager):  # type: ignore[misc]
        async def _listen(self) -> Any:
            yield {"method": "batch", "host_id": "other", "messages": [emit]}
            yield emit

        async def _handle_emit(self, message: dict[str, Any]) -> None:
            handled.append(message)

    probe = Probe(logger=logging.getLogger("probe"))
    probe.server = types.SimpleNamespace(logger=logging.getLogger("probe"))
    await probe._thread()
    if handled != [emit]:
        pytest.fail(
            f"override RedisManager._listen / {pubsub_batch.__name__}: "
            f"AsyncPubSubManager._thread handled {handled} of a batch and a dict message"
        )


# --- uvicorn --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "signature"),
    [
        ("connection_made", "(self, transport: 'asyncio.Transport') -> 'None'"),
        ("on_message_begin", "(self) -> 'None'"),
        ("on_headers_complete", "(self) -> 'None'"),
        ("connection_lost", "(self, exc: 'Exception | None') -> 'None'"),
    ],
)
def test_header_timeout_protocol(name: str, signature: str) -> None:
    owner = httptools_impl.HttpToolsProtocol
    hooked("HeaderTimeoutProtocol", uvicorn_http, owner, name, signature)
    calls("HeaderTimeoutProtocol", owner.__init__, "HttpRequestParser(self)")


def test_relay_websocket_protocol() -> None:
    """uvicorn uses only what PacketQueue has of ``asyncio.Queue`` on its receive queue."""
    owner = websockets_sansio_impl.WebSocketsSansIOProtocol
    hooked(
        "RelayWebSocketProtocol", uvicorn_websocket, owner, "__init__",
        "(self, config: 'Config', server_state: 'ServerState', app_state: 'dict[str, Any]', "
        "_loop: 'asyncio.AbstractEventLoop | None' = None) -> 'None'",
    )  # fmt: skip
    used = set(re.findall(r"self\.queue\.(\w+)", inspect.getsource(websockets_sansio_impl)))
    missing = {name for name in used if not hasattr(PacketQueue, name)}
    assert used, "override RelayWebSocketProtocol: uvicorn's protocol has no self.queue"
    assert not missing, (
        f"override RelayWebSocketProtocol: uvicorn now calls self.queue.{missing} "
        "which PacketQueue lacks"
    )


def test_relay_websocket_protocol_abort_and_1006() -> None:
    """RelayWebSocketProtocol: handle_connect builds the scope (we add the abort
    extension); connection_lost reports 1005 unless the handshake flag is off (we report
    a transport lost without a close frame as 1006)."""
    owner = websockets_sansio_impl.WebSocketsSansIOProtocol
    module = uvicorn_websocket
    hooked(
        "RelayWebSocketProtocol.handle_connect", module, owner, "handle_connect",
        "(self, event: 'Request') -> 'None'",
    )  # fmt: skip
    hooked(
        "RelayWebSocketProtocol.connection_lost", module, owner, "connection_lost",
        "(self, exc: 'Exception | None') -> 'None'",
    )  # fmt: skip
    assert "self.scope" in inspect.getsource(owner.handle_connect), (
        "override RelayWebSocketProtocol.handle_connect: uvicorn no longer builds the scope there"
    )
    assert "1005 if self.handshake_complete" in inspect.getsource(owner.connection_lost), (
        "override RelayWebSocketProtocol.connection_lost: uvicorn's lost-transport code moved"
    )


def test_relay_websocket_protocol_send_text_now() -> None:
    """``send_text_now`` writes a text message as uvicorn's ``send`` does, under the same
    conditions (it reads the flags ``send`` reads and frames through ``self.conn``)."""
    owner = websockets_sansio_impl.WebSocketsSansIOProtocol
    hooked(
        "RelayWebSocketProtocol.send_text_now", uvicorn_websocket, owner, "send",
        "(self, message: 'ASGISendEvent') -> 'None'",
    )  # fmt: skip
    calls(
        "RelayWebSocketProtocol.send_text_now",
        owner.send,
        "await self.writable.wait()",
        "if self.disconnected:",
        "not self.handshake_complete and self.initial_response is None",
        "not self.close_sent and self.initial_response is None",
        "self.conn.send_text(text_data.encode())",
        "output = self.conn.data_to_send()",
        'self.transport.write(b"".join(output))',
        "except InvalidState:",
    )
    calls(
        "RelayWebSocketProtocol.send_text_now",
        owner.__init__,
        "self.writable = asyncio.Event()",
        "self.disconnected = False",
    )


def test_adopt_serving_settings() -> None:
    """uvicorn_config.adopt_serving_settings finds the Config in ``load``/``load_app`` and
    sets the attributes ``load`` reads (or has read) and the protocols use."""
    hooked("adopt_serving_settings", uvicorn_config, uvicorn.Config, "load", "(self) -> 'None'")
    hooked("adopt_serving_settings", uvicorn_config, uvicorn.Config, "load_app", "(self) -> 'Any'")
    calls(
        "adopt_serving_settings", uvicorn.Config.load,
        "self.load_app(", "http_protocol_class", "ws_protocol_class", "forwarded_allow_ips",
    )  # fmt: skip
    config = uvicorn.Config("server.main:app")
    for name in ("http", "ws", "ws_max_size", "ws_per_message_deflate", "forwarded_allow_ips"):
        assert hasattr(config, name), f"override adopt_serving_settings: Config has no {name}"
    assert uvicorn_config.loading_config() is None  # outside uvicorn it changes nothing


@pytest.mark.parametrize(
    ("name", "signature"),
    [
        ("handle_exit", "(self, sig: 'int', frame: 'FrameType | None') -> 'None'"),
        ("capture_signals", "(self) -> 'Generator[None, None, None]'"),
        ("shutdown", "(self, sockets: 'list[socket.socket] | None' = None) -> 'None'"),
    ],
)
def test_graceful_server(name: str, signature: str) -> None:
    hooked("GracefulServer", uvicorn_server, uvicorn.Server, name, signature)


def test_graceful_server_hooks_are_still_called() -> None:
    calls("GracefulServer.capture_signals", uvicorn.Server.serve, "self.capture_signals()")
    calls("GracefulServer.shutdown", uvicorn.Server._serve, "self.shutdown(")
    source = inspect.getsource(uvicorn.Server.capture_signals)
    calls("GracefulServer.handle_exit", uvicorn.Server.capture_signals, "self.handle_exit")
    assert "HANDLED_SIGNALS" in source


# --- redis-py (services/storage/redis_client.py, outside the fence) ------------------


def test_redis_connection_hooks_of_the_breaker() -> None:
    """The breaker's guarded connection wraps these three methods (redis-py 8.2.0)."""
    for name in ("send_packed_command", "read_response", "connect"):
        assert callable(getattr(AbstractConnection, name, None)), (
            f"services.storage.redis_client: redis-py's connection has no {name}"
        )
    assert "connection_class" in inspect.signature(ConnectionPool.__init__).parameters


# --- the fence itself -----------------------------------------------------------------

FENCE = "events/transport/internals"
PRIVATE_IMPORT = re.compile(
    r"^\s*(?:import|from)\s+(engineio|socketio\.(?!exceptions\b)\w+|uvicorn\.(?:protocols|server)\b)"
    r"|^\s*from\s+socketio\s+import\s+.*\b(packet|\w*manager)\b",
    re.MULTILINE | re.IGNORECASE,
)


def test_nothing_outside_the_fence_imports_library_internals() -> None:
    """The server's code (not tests, bench or the client library) keeps to the fence."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for package in ("auth", "events", "health", "server", "services"):
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            if relative.startswith(FENCE):
                continue
            for match in PRIVATE_IMPORT.finditer(path.read_text()):
                offenders.append(f"{relative}: {match.group(0).strip()}")
    assert not offenders, f"library internals imported outside {FENCE}: {offenders}"
