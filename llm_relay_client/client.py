"""``ChatClient``: the asyncio client for llm-relay's Socket.IO protocol.

    async with ChatClient("http://127.0.0.1:8000", token=token) as client:
        async for text in client.stream("Say hello", model="openai/gpt-4o-mini"):
            print(text, end="", flush=True)

The connection is kept alive for you: when the transport drops, the client reconnects,
joins its rooms again and sends ``resume {request_id, last_seq}`` for every open
request, so each stream still yields its text exactly once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, TypeAlias

import socketio

from llm_relay_client.connection import disconnect_deliberately, new_socket, refusal
from llm_relay_client.errors import CLOSED, CONNECTION_ERROR, TIMEOUT, ChatError
from llm_relay_client.models import Done, Messages, Payload, Session, as_messages
from llm_relay_client.rooms import Room
from llm_relay_client.stream import Stream
from llm_relay_client.tracks import Track, Tracks

logger = logging.getLogger(__name__)

MAX_RESUME_ATTEMPTS = 3

TokenSource: TypeAlias = str | Callable[[], str | Awaitable[str]] | None


def new_request_id() -> str:
    return "py_" + secrets.token_urlsafe(12)


class ChatClient:
    """One Socket.IO connection to an llm-relay server.

    ``token`` is a JWT, or a function (sync or async) returning one, called on every
    (re)connect. ``reconnect_timeout`` bounds how long open streams wait for the
    connection to come back before they fail with ``connection_error``; keep it at or
    below the server's ``RESUME_GRACE_S``.
    """

    def __init__(
        self,
        url: str,
        *,
        token: TokenSource = None,
        transports: Sequence[str] = ("websocket",),
        reconnect: bool = True,
        reconnect_timeout: float = 30.0,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
        socketio_path: str = "socket.io",
    ) -> None:
        self.url = url
        self.session: Session | None = None
        self._token = token
        self._transports = list(transports)
        self._reconnect = reconnect
        self._reconnect_timeout = reconnect_timeout
        self._timeout = timeout
        self._headers = dict(headers or {})
        self._path = socketio_path
        self._sio = new_socket()
        self._rooms: dict[str, Room] = {}
        self._tracks = Tracks(self._rooms, self._heal)
        self._session_waiter: asyncio.Future[Session] | None = None
        self._connect_error: ChatError | None = None
        self._connected = asyncio.Event()
        self._link: asyncio.Future[None] | None = None  # resolved when this connection drops
        self._closing = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._register()

    # -- connection --------------------------------------------------------------------

    def _register(self) -> None:
        on = self._sio.on
        on("session", self._on_session)
        on("connect_error", self._on_connect_error)
        on("disconnect", self._on_disconnect)
        for event in ("token", "done", "error"):
            on(event, self._stream_handler(event))
        for event in ("message", "presence"):
            on(event, self._room_handler(event))

    @property
    def last_done(self) -> Done | None:
        """The ``done`` event of our most recently finished request."""
        return self._tracks.last_done

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def connect(self) -> Session:
        """Connect (``async with`` does it); raise ChatError if refused or unreachable."""
        self._closing = False
        await self._ensure_connected()
        assert self.session is not None
        return self.session

    async def _auth(self) -> dict[str, str]:
        token = self._token
        if callable(token):
            value = token()
            token = await value if inspect.isawaitable(value) else value
        return {"token": token} if token else {}

    async def _open(self) -> None:
        self._connect_error = None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Session] = loop.create_future()
        self._session_waiter = waiter
        try:
            await self._sio.connect(
                self.url,
                auth=self._auth,
                headers=self._headers,
                transports=self._transports,
                socketio_path=self._path,
                wait_timeout=self._timeout,
            )
        except (socketio.exceptions.ConnectionError, ValueError) as exc:
            await self._sio.eio.disconnect()  # closes its HTTP session
            raise self._connect_error or ChatError(
                CONNECTION_ERROR, str(exc) or "Cannot connect to the server.", retryable=True
            ) from None
        try:
            self.session = await asyncio.wait_for(waiter, self._timeout)
        except TimeoutError:
            await disconnect_deliberately(self._sio)
            raise ChatError(TIMEOUT, "The server sent no session event.", retryable=True) from None
        self._link = loop.create_future()
        self._connected.set()

    async def _ensure_connected(self) -> None:
        if self._closing:
            raise ChatError(CLOSED, "The client is closed.")
        if self._connected.is_set():
            return
        task = self._reconnect_task
        if task is None:
            await self._open()
            return
        waiter = asyncio.ensure_future(self._connected.wait())
        await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not self._connected.is_set():
            raise _lost()

    async def _on_session(self, data: Any = None) -> None:
        waiter = self._session_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(Session.parse(data))

    async def _on_connect_error(self, data: Any = None) -> None:
        self._connect_error = refusal(data)

    async def _on_disconnect(self, reason: Any = None) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._link is not None and not self._link.done():
            self._link.set_result(None)
        if self._closing or not was_connected:
            return
        if self._reconnect and self._reconnect_task is None:
            logger.info("connection lost (%s); reconnecting", reason)
            self._reconnect_task = self._spawn(self._reconnect_loop())
        elif not self._reconnect:
            self._fail_all(_lost())

    async def _reconnect_loop(self) -> None:
        deadline = time.monotonic() + self._reconnect_timeout
        delay = 0.1
        try:
            while not self._closing:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                try:
                    await self._open()
                except ChatError as exc:
                    if exc.is_auth or time.monotonic() >= deadline:
                        self._fail_all(exc if exc.is_auth else _lost())
                        return
                    continue
                logger.info("reconnected; resuming %d request(s)", len(self._tracks))
                await self._recover()
                if self._connected.is_set():
                    return
                deadline = time.monotonic() + self._reconnect_timeout  # lost again
                delay = 0.1
        finally:
            self._reconnect_task = None

    async def _recover(self) -> None:
        """Join our rooms again, then resume every open request from its last ``seq``."""
        for room in list(self._rooms.values()):
            try:
                ack = await self._call("join", {"room": room.name})
            except ChatError:
                continue  # the connection went again: the next recovery retries
            if ack.get("ok") is True:
                room._rejoined(ack)
            else:
                self._rooms.pop(room.name, None)
                room._end(ChatError.from_wire(ack.get("error")))
        for track in self._tracks.open():
            try:
                await self._resume(track)
            except ChatError:
                return  # the connection went again: the next recovery resumes it

    async def _resume(self, track: Track, attempt: int = 1) -> None:
        """Ask for the request's events after ``last_seq`` (and then the live ones)."""
        if track.resuming:
            return
        track.resuming = True
        try:
            payload = {"request_id": track.request_id, "last_seq": track.last_seq}
            ack = await self._call("resume", payload)
        finally:
            track.resuming = False
        if ack.get("ok") is True:
            track.accepted = True
            deferred, track.deferred = track.deferred, None
            if deferred is not None and self._tracks.is_open(track):
                # A room's terminal event came while resuming: it may have overtaken
                # tokens the replay is still bringing; ask again from where we are.
                if attempt < MAX_RESUME_ATTEMPTS:
                    await self._resume(track, attempt + 1)
                else:
                    self._tracks.end(track, *deferred)
            return
        error = ChatError.from_wire(ack.get("error"), track.request_id)
        if error.code == "not_found" and not track.accepted and track.payload is not None:
            await self._send_chat(track)  # the request never reached the server
            return
        self._tracks.fail(track, error)

    def _heal(self, track: Track) -> None:
        """Tokens went missing (live ones overtook a reconnect): fetch them from the log."""
        if not track.resuming and self._connected.is_set():
            self._spawn(self._heal_now(track))

    async def _heal_now(self, track: Track) -> None:
        try:
            await self._resume(track)
        except ChatError as exc:
            logger.info("resuming %s failed: %s", track.request_id, exc)

    async def close(self) -> None:
        """Leave deliberately: the server closes our upstream requests at once."""
        if self._closing:
            return
        self._closing = True
        task = self._reconnect_task
        if task is not None:
            task.cancel()
        await disconnect_deliberately(self._sio)
        self._connected.clear()
        self._fail_all(ChatError(CLOSED, "The client was closed."))
        for room in self._rooms.values():
            room._end()
        self._rooms.clear()
        for pending in list(self._tasks):
            pending.cancel()

    async def __aenter__(self) -> ChatClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _call(self, event: str, data: Payload) -> Payload:
        """Emit with an acknowledgement; the ack as a dict."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()

        def on_ack(*args: Any) -> None:
            if not answer.done():
                answer.set_result(args[0] if args else None)

        link = self._link
        try:
            await self._sio.emit(event, data, callback=on_ack)
        except socketio.exceptions.SocketIOError:
            raise _lost("Not connected to the server.") from None
        waits: list[asyncio.Future[Any]] = [answer] if link is None else [answer, link]
        await asyncio.wait(waits, timeout=self._timeout, return_when=asyncio.FIRST_COMPLETED)
        if answer.done():
            ack = answer.result()
            return ack if isinstance(ack, dict) else {}
        answer.cancel()
        if link is not None and link.done():
            raise _lost()
        raise ChatError(TIMEOUT, f"No answer to {event!r} in time.", retryable=True)

    # -- requests ----------------------------------------------------------------------

    def stream(
        self,
        messages: Messages,
        *,
        model: str | None = None,
        room: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        models: list[str] | None = None,
        request_id: str | None = None,
    ) -> Stream:
        """A chat request; it is sent when iteration (or ``async with``) starts.

        ``messages`` is the whole conversation (``[{"role": ..., "content": ...}]``) or a
        string for one user message. With ``room``, it is only the new message: the
        server keeps the room's conversation.
        """
        rid = request_id or new_request_id()
        payload: Payload = {"request_id": rid, "messages": as_messages(messages)}
        options = {
            "model": model,
            "models": models,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
            "stop": stop,
            "seed": seed,
            "room": room,
        }
        payload.update({k: v for k, v in options.items() if v is not None})
        return Stream(self, rid, room, payload)

    async def complete(self, messages: Messages, **options: Any) -> str:
        """The whole answer as one string; ``last_done`` holds its ``done`` event."""
        async with self.stream(messages, **options) as stream:
            await stream.result()
        return stream.text

    async def cancel(self, request_id: str) -> None:
        """Stop one of our requests; it ends with ``done`` (``finish_reason: cancelled``)."""
        await self._ensure_connected()
        ack = await self._call("cancel", {"request_id": request_id})
        if ack.get("ok") is not True:
            raise ChatError.from_wire(ack.get("error"), request_id)

    async def refresh(self, token: str) -> float:
        """Hand the server a newer token for the same user; returns its ``exp``."""
        ack = await self._call("refresh", {"token": token})
        if ack.get("ok") is not True:
            raise ChatError.from_wire(ack.get("error"))
        if not callable(self._token):
            self._token = token
        expires_at = ack.get("expires_at")
        return float(expires_at) if isinstance(expires_at, int | float) else 0.0

    async def _begin(self, stream: Stream) -> None:
        await self._ensure_connected()
        track = self._tracks.add(stream)
        try:
            await self._send_chat(track)
        except ChatError:
            if self._reconnect_task is None:
                self._tracks.discard(track)
                raise
            # reconnecting: the recovery resumes it, or sends it again

    async def _send_chat(self, track: Track) -> None:
        def on_ack(ack: Any = None) -> None:
            if isinstance(ack, dict) and ack.get("ok") is True:
                track.accepted = True
            else:
                error = ChatError.from_wire(_dict(ack).get("error"), track.request_id)
                self._tracks.fail(track, error)

        try:
            await self._sio.emit("chat", track.payload, callback=on_ack)
        except socketio.exceptions.SocketIOError:
            raise _lost("Not connected to the server.") from None

    # -- rooms -------------------------------------------------------------------------

    async def join(self, room: str) -> Room:
        """Join a room; iterate the returned :class:`Room` for its events."""
        await self._ensure_connected()
        existing = self._rooms.get(room)
        if existing is not None:
            return existing
        joined = Room(self, room)
        self._rooms[room] = joined  # before the call: events may follow the ack at once
        try:
            ack = await self._call("join", {"room": room})
        except ChatError:
            self._rooms.pop(room, None)
            raise
        if ack.get("ok") is not True:
            self._rooms.pop(room, None)
            raise ChatError.from_wire(ack.get("error"))
        joined._joined(ack)
        return joined

    async def leave(self, room: str) -> None:
        await self._ensure_connected()
        ack = await self._call("leave", {"room": room})
        joined = self._rooms.pop(room, None)
        if joined is not None:
            joined._end()
        if ack.get("ok") is not True:
            raise ChatError.from_wire(ack.get("error"))

    def _fail_all(self, error: ChatError) -> None:
        """End our open requests with ``error``; rooms' feeds end too, unless we closed."""
        self._tracks.fail_ours(error)
        if error.code != CLOSED:
            for room in self._rooms.values():
                room._end(error)
            self._rooms.clear()

    # -- incoming events ---------------------------------------------------------------

    def _stream_handler(self, event: str) -> Callable[..., Awaitable[None]]:
        async def handler(data: Any = None) -> None:
            self._tracks.on_event(event, data)

        return handler

    def _room_handler(self, event: str) -> Callable[..., Awaitable[None]]:
        async def handler(data: Any = None) -> None:
            name = _dict(data).get("room")
            room = self._rooms.get(name) if isinstance(name, str) else None
            if room is not None:
                room._feed(event, data)

        return handler


def _lost(message: str = "Lost the connection to the server.") -> ChatError:
    return ChatError(CONNECTION_ERROR, message, retryable=True)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
