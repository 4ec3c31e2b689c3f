"""uvicorn's HTTP protocol with a deadline for request headers (slow-loris defence).

Read from uvicorn 0.55.0 (``HttpToolsProtocol.connection_made``, ``on_message_begin``,
``on_headers_complete``, ``connection_lost``).  Hardening, kept whatever it costs (one
timer per request's headers; not measured).

uvicorn closes idle keep-alive connections but sets no deadline on a request whose
headers trickle in (or never come): every such connection would be held for good.
``HeaderTimeoutProtocol`` closes a connection when a request's headers are not complete
within ``header_timeout_s`` of its first byte, or of the connection's opening.
WebSocket handshakes are HTTP requests too, so they get the same deadline.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeaderTimeoutProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, header_timeout_s: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
