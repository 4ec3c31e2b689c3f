"""Contract checks for the overrides fault handling relies on (issue 16): each names the
library attribute it hooks; a library release that moves it fails here, loudly."""

from __future__ import annotations

import inspect

from engineio.async_drivers import asgi as eio_asgi
from engineio.async_socket import AsyncSocket
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


def params(func: object) -> list[str]:
    return list(inspect.signature(func).parameters)  # type: ignore[arg-type]


def test_engineio_socket_close_takes_wait_abort_reason() -> None:
    """RelaySocket.close (a cut-off client's close waits for nothing)."""
    assert params(AsyncSocket.close)[:4] == ["self", "wait", "abort", "reason"]


def test_engineio_asgi_websocket_is_called_with_the_environ() -> None:
    """_StrictWebSocket.__call__ keeps the environ (its scope offers the abort)."""
    assert params(eio_asgi.WebSocket.__call__) == ["self", "environ"]
    assert "asgi.scope" in inspect.getsource(eio_asgi.translate_request)


def test_uvicorn_sansio_protocol_hooks() -> None:
    """RelayWebSocketProtocol: handle_connect builds the scope; connection_lost reports
    1005 unless the handshake flag is off (we report a lost transport as 1006)."""
    assert params(WebSocketsSansIOProtocol.handle_connect) == ["self", "event"]
    assert params(WebSocketsSansIOProtocol.connection_lost) == ["self", "exc"]
    source = inspect.getsource(WebSocketsSansIOProtocol.connection_lost)
    assert "1005 if self.handshake_complete" in source
    assert "self.scope" in inspect.getsource(WebSocketsSansIOProtocol.handle_connect)


def test_redis_connection_hooks_of_the_breaker() -> None:
    """services.storage.redis_client: the guarded connection's three methods."""
    for name in ("send_packed_command", "read_response", "connect"):
        assert callable(getattr(AbstractConnection, name)), name
    assert hasattr(ConnectionPool, "connection_class") or "connection_class" in params(
        ConnectionPool.__init__
    )
