"""One Socket.IO connection at a time, and the python-socketio details we work around.

``Link`` connects (waiting for the server's ``session`` event), emits with
acknowledgements that fail fast when the connection drops, and disconnects
deliberately. Reconnecting and resuming are the client's business (``client.py``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any, TypeAlias

import socketio
from socketio import packet

from llm_relay_client.errors import CONNECTION_ERROR, TIMEOUT, ChatError
from llm_relay_client.models import Payload, Session

FLUSH_TIMEOUT_S = 2.0

TokenSource: TypeAlias = str | Callable[[], str | Awaitable[str]] | None


def lost(message: str = "Lost the connection to the server.") -> ChatError:
    return ChatError(CONNECTION_ERROR, message, retryable=True)


class Link:
    """The Socket.IO client of a ChatClient; ``on_lost`` runs when an open link drops."""

    def __init__(
        self,
        url: str,
        *,
        token: TokenSource,
        transports: Sequence[str],
        timeout: float,
        headers: dict[str, str] | None,
        socketio_path: str,
        on_lost: Callable[[Any], Awaitable[None]],
    ) -> None:
        self.url = url
        self.token = token
        self.session: Session | None = None
        self.connected = asyncio.Event()
        # Reconnection is ours (it resumes streams); SIGINT handling is the application's.
        self.sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        self._transports = list(transports)
        self._timeout = timeout
        self._headers = dict(headers or {})
        self._path = socketio_path
        self._on_lost = on_lost
        self._session_waiter: asyncio.Future[Session] | None = None
        self._refusal: ChatError | None = None
        self._down: asyncio.Future[None] | None = None  # resolved when this link drops
        self.sio.on("session", self._on_session)
        self.sio.on("connect_error", self._on_connect_error)
        self.sio.on("disconnect", self._on_disconnect)

    def on(self, event: str, handler: Callable[..., Awaitable[None]]) -> None:
        self.sio.on(event, handler)

    async def _auth(self) -> dict[str, str]:
        token = self.token
        if callable(token):
            value = token()
            token = await value if inspect.isawaitable(value) else value
        return {"token": token} if token else {}

    async def open(self) -> Session:
        """Connect and wait for ``session``; ChatError if refused or unreachable."""
        self._refusal = None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Session] = loop.create_future()
        self._session_waiter = waiter
        try:
            await self.sio.connect(
                self.url,
                auth=self._auth,
                headers=self._headers,
                transports=self._transports,
                socketio_path=self._path,
                wait_timeout=self._timeout,
            )
        except (socketio.exceptions.ConnectionError, ValueError) as exc:
            await self.sio.eio.disconnect()  # closes its HTTP session
            raise self._refusal or lost(str(exc) or "Cannot connect to the server.") from None
        try:
            self.session = await asyncio.wait_for(waiter, self._timeout)
        except TimeoutError:
            await self.close()
            raise ChatError(TIMEOUT, "The server sent no session event.", retryable=True) from None
        self._down = loop.create_future()
        self.connected.set()
        return self.session

    async def _on_session(self, data: Any = None) -> None:
        waiter = self._session_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(Session.parse(data))

    async def _on_connect_error(self, data: Any = None) -> None:
        self._refusal = refusal(data)

    async def _on_disconnect(self, reason: Any = None) -> None:
        was_open = self.connected.is_set()
        self.connected.clear()
        if self._down is not None and not self._down.done():
            self._down.set_result(None)
        if was_open:
            await self._on_lost(reason)

    async def emit(self, event: str, data: Payload, callback: Callable[..., None]) -> None:
        try:
            await self.sio.emit(event, data, callback=callback)
        except socketio.exceptions.SocketIOError:
            raise lost("Not connected to the server.") from None

    async def call(self, event: str, data: Payload) -> Payload:
        """Emit with an acknowledgement; the ack as a dict. Fails at once if the link drops."""
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_ack(*args: Any) -> None:
            if not answer.done():
                answer.set_result(args[0] if args else None)

        down = self._down
        await self.emit(event, data, on_ack)
        waits: list[asyncio.Future[Any]] = [answer] if down is None else [answer, down]
        await asyncio.wait(waits, timeout=self._timeout, return_when=asyncio.FIRST_COMPLETED)
        if answer.done():
            ack = answer.result()
            return ack if isinstance(ack, dict) else {}
        answer.cancel()
        if down is not None and down.done():
            raise lost()
        raise ChatError(TIMEOUT, f"No answer to {event!r} in time.", retryable=True)

    async def close(self) -> None:
        """Send Socket.IO's DISCONNECT packet, wait until it is written, then close.

        ``AsyncClient.disconnect()`` queues that packet and closes the socket at once, so
        the packet may never be written and the server would see a lost transport (and
        keep our streams running for the resume grace period) instead of a deliberate
        disconnect (which closes their upstream requests at once).
        """
        sio = self.sio
        eio = sio.eio
        if sio.connected and eio.state == "connected":
            for namespace in list(sio.namespaces):
                await sio._send_packet(sio.packet_class(packet.DISCONNECT, namespace=namespace))
            if eio.write_loop_task is not None:
                with suppress(TimeoutError):
                    await asyncio.wait_for(eio.queue.join(), FLUSH_TIMEOUT_S)
        await eio.disconnect()
        if sio.connected:  # the Engine.IO disconnect handler did not run
            sio.connected = False
            sio.namespaces = {}
        self.connected.clear()


def refusal(data: Any) -> ChatError:
    """A ``connect_error`` argument as a ChatError.

    A refusal by the server comes as ``{message, data: {code, message}}``; a transport
    failure (no server, bad URL) as a plain message.
    """
    if isinstance(data, dict):
        inner = data.get("data")
        if isinstance(inner, dict) and isinstance(inner.get("code"), str):
            return ChatError.from_wire(inner)
        if isinstance(data.get("code"), str):
            return ChatError.from_wire(data)
        message = data.get("message")
        if isinstance(message, str):
            return lost(message)
    return lost(data if isinstance(data, str) and data else "Cannot connect to the server.")
