"""A request body that never finishes must not hold the server (slow-loris on the body).

``BodyDeadline`` wraps the HTTP app: a request's body must arrive in full within
``timeout_s`` of the request (``HTTP_BODY_TIMEOUT_S``), or the handler is cancelled and
the client gets ``408 Request Timeout`` with ``Connection: close``.  Requests without a
body are not touched; after the body, ``receive`` (waiting for a disconnect) is not
bounded.  (Request *headers* that never finish are closed by the HTTP protocol itself:
``events.transport.internals.uvicorn_http``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

logger = logging.getLogger(__name__)

ASGIApp = Any  # (scope, receive, send) -> Awaitable[None]

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class BodyDeadline:
    def __init__(self, app: ASGIApp, timeout_s: float = 30.0) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in _NO_BODY:
            await self.app(scope, receive, send)
            return
        complete = asyncio.Event()
        started = False

        async def receive_body() -> Any:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                complete.set()
            return message

        async def send_response(message: Any) -> None:
            nonlocal started
            started = True
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, receive_body, send_response))
        body = asyncio.ensure_future(complete.wait())
        try:
            await asyncio.wait(
                {handler, body}, timeout=self.timeout_s, return_when="FIRST_COMPLETED"
            )
        finally:
            body.cancel()
        if handler.done() or complete.is_set():
            await handler
            return
        handler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await handler
        logger.info("request body not complete within %.0f s: 408", self.timeout_s)
        if not started:
            await send(
                {
                    "type": "http.response.start",
                    "status": 408,
                    "headers": [(b"connection", b"close"), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
