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
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from llm_relay_client.connection import Link, TokenSource, lost
from llm_relay_client.errors import CLOSED, ChatError
from llm_relay_client.models import (
    STREAM_EVENTS,
    TERMINAL_EVENTS,
    Done,
    Messages,
    Payload,
    Session,
    as_messages,
)
from llm_relay_client.rooms import Room
from llm_relay_client.stream import Stream
from llm_relay_client.tools import ToolRun, Tools, run_tools
from llm_relay_client.tracks import Track, Tracks

logger = logging.getLogger(__name__)

MAX_RESUME_ATTEMPTS = 3


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
        self._link = Link(
            url,
            token=token,
            transports=transports,
            timeout=timeout,
            headers=headers,
            socketio_path=socketio_path,
            on_lost=self._on_lost,
        )
        self._reconnect = reconnect
        self._reconnect_timeout = reconnect_timeout
        self._rooms: dict[str, Room] = {}
        self._tracks = Tracks(self._rooms, self._heal)
        self._closing = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._register()

    # -- connection --------------------------------------------------------------------

    def _register(self) -> None:
        on = self._link.on
        for event in (*STREAM_EVENTS, *TERMINAL_EVENTS):
            on(event, self._stream_handler(event))
        for event in ("message", "presence"):
            on(event, self._room_handler(event))

    @property
    def last_done(self) -> Done | None:
        """The ``done`` event of our most recently finished request."""
        return self._tracks.last_done

    @property
    def session(self) -> Session | None:
        """The server's ``session`` event of the current (or last) connection."""
        return self._link.session

    @property
    def connected(self) -> bool:
        return self._link.connected.is_set()

    async def connect(self) -> Session:
        """Connect (``async with`` does it); raise ChatError if refused or unreachable."""
        self._closing = False
        await self._ensure_connected()
        assert self._link.session is not None
        return self._link.session

    async def _ensure_connected(self) -> None:
        if self._closing:
            raise ChatError(CLOSED, "The client is closed.")
        connected = self._link.connected
        if connected.is_set():
            return
        task = self._reconnect_task
        if task is None:
            await self._link.open()
            return
        waiter = asyncio.ensure_future(connected.wait())
        await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not connected.is_set():
            raise lost()

    async def _on_lost(self, reason: Any) -> None:
        if self._closing:
            return
        if not self._reconnect:
            self._fail_all(lost())
        elif self._reconnect_task is None:
            logger.info("connection lost (%s); reconnecting", reason)
            self._reconnect_task = self._spawn(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        deadline = time.monotonic() + self._reconnect_timeout
        delay = 0.1
        try:
            while not self._closing:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                try:
                    await self._link.open()
                except ChatError as exc:
                    if exc.is_auth or time.monotonic() >= deadline:
                        self._fail_all(exc if exc.is_auth else lost())
                        return
                    continue
                logger.info("reconnected; resuming %d request(s)", len(self._tracks))
                await self._recover()
                if self.connected:
                    return
                deadline = time.monotonic() + self._reconnect_timeout  # lost again
                delay = 0.1
        finally:
            self._reconnect_task = None

    async def _recover(self) -> None:
        """Join our rooms again, then resume every open request from its last ``seq``."""
        for room in list(self._rooms.values()):
            try:
                ack = await self._link.call("join", {"room": room.name})
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
            ack = await self._link.call("resume", payload)
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
        if not track.resuming and self.connected:
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
        await self._link.close()
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
        tools: Tools | Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        reasoning: Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        **fields: Any,
    ) -> Stream:
        """A chat request; it is sent when iteration (or ``async with``) starts.

        ``messages`` is the whole conversation (``[{"role": ..., "content": ...}]``) or a
        string for one user message. With ``room``, it is only the new message: the
        server keeps the room's conversation. ``tools`` takes a :class:`Tools` or the
        protocol's list of tool definitions; ``reasoning`` is e.g. ``{"effort": "high"}``.
        Any other ChatRequest field (``provider``, ``transforms``, ``top_k``...) goes in
        ``fields`` and is sent as given; ``None`` values are left out.
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
            "tools": tools.definitions() if isinstance(tools, Tools) else tools,
            "tool_choice": tool_choice,
            "reasoning": reasoning,
            "response_format": response_format,
            "room": room,
            **fields,
        }
        payload.update({k: _plain(v) for k, v in options.items() if v is not None})
        return Stream(self, rid, room, payload)

    async def run_tools(
        self, messages: Messages, tools: Tools, *, max_rounds: int = 8, **options: Any
    ) -> ToolRun:
        """Chat with ``tools`` until the model answers: each time it asks for tool calls,
        run them and send the results back (at most ``max_rounds`` requests). See
        :func:`llm_relay_client.tools.run_tools`."""
        return await run_tools(self.stream, messages, tools, max_rounds=max_rounds, **options)

    async def complete(self, messages: Messages, **options: Any) -> str:
        """The whole answer as one string; ``last_done`` holds its ``done`` event."""
        async with self.stream(messages, **options) as stream:
            await stream.result()
        return stream.text

    async def cancel(self, request_id: str) -> None:
        """Stop one of our requests; it ends with ``done`` (``finish_reason: cancelled``)."""
        await self._ensure_connected()
        ack = await self._link.call("cancel", {"request_id": request_id})
        if ack.get("ok") is not True:
            raise ChatError.from_wire(ack.get("error"), request_id)

    async def refresh(self, token: str) -> float:
        """Hand the server a newer token for the same user; returns its ``exp``."""
        ack = await self._link.call("refresh", {"token": token})
        if ack.get("ok") is not True:
            raise ChatError.from_wire(ack.get("error"))
        if not callable(self._link.token):
            self._link.token = token
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

        await self._link.emit("chat", track.payload or {}, on_ack)

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
            ack = await self._link.call("join", {"room": room})
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
        ack = await self._link.call("leave", {"room": room})
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


def _plain(value: Any) -> Any:
    """Mappings and sequences as JSON-ready dicts and lists (tuples, MappingProxy...)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
