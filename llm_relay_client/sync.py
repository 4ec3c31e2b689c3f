"""A thin blocking wrapper for plain scripts: the async client on a background loop.

    with SyncChatClient("http://127.0.0.1:8000", token=token) as client:
        for text in client.stream("Tell me a joke"):
            print(text, end="", flush=True)

Interrupting a blocking call (Ctrl-C) leaves the client usable: the next call to the
same iterator picks up the read that was interrupted, so no piece of text is lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

from llm_relay_client.client import ChatClient
from llm_relay_client.connection import TokenSource
from llm_relay_client.models import (
    Done,
    Member,
    Message,
    Messages,
    RoomEvent,
    Session,
    StreamEvent,
)
from llm_relay_client.rooms import Room
from llm_relay_client.stream import Event, Stream
from llm_relay_client.tools import ToolRun, Tools

T = TypeVar("T")
CLOSE_TIMEOUT_S = 5.0
INTERRUPTED_CLOSE_TIMEOUT_S = 0.5  # leaving on Ctrl-C: say goodbye briefly, then exit anyway


class _Loop:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="llm-relay-client", daemon=True
        )
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.submit(coro).result(timeout)

    def stop(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()


class _End:
    """Marks the end of an iteration across the thread boundary."""


_END = _End()


class _Reader(Generic[T]):
    """Blocking reads of an async source; an interrupted read is resumed, not repeated."""

    def __init__(self, loop: _Loop, read: Callable[[], Coroutine[Any, Any, T | _End]]) -> None:
        self._loop = loop
        self._read = read
        self._pending: concurrent.futures.Future[T | _End] | None = None

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._pending is None:
            self._pending = self._loop.submit(self._read())
        value = self._pending.result()  # KeyboardInterrupt here keeps _pending
        self._pending = None
        if isinstance(value, _End):
            raise StopIteration
        return value


class SyncStream:
    """``for text in stream``; then ``stream.done``. See :class:`Stream`."""

    def __init__(self, loop: _Loop, stream: Stream) -> None:
        self.stream = stream
        self._loop = loop
        self._text: _Reader[str] = _Reader(loop, self._read_text)

    @property
    def request_id(self) -> str:
        return self.stream.request_id

    @property
    def done(self) -> Done | None:
        return self.stream.done

    @property
    def text(self) -> str:
        return self.stream.text

    async def _read_text(self) -> str | _End:
        try:
            return await self.stream.__anext__()
        except StopAsyncIteration:
            return _END

    async def _read_event(self) -> StreamEvent | _End:
        event = await self.stream.next_event()
        return _END if event is None else event

    async def _read_raw(self) -> Event | _End:
        event = await self.stream.next_raw()
        return _END if event is None else event

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._text)

    @property
    def reasoning(self) -> str:
        return self.stream.reasoning

    def events(self) -> Iterator[StreamEvent]:
        """Every event, typed, the terminal one included. See :meth:`Stream.events`."""
        reader: _Reader[StreamEvent] = _Reader(self._loop, self._read_event)
        return reader

    def raw_events(self) -> Iterator[Event]:
        """Every protocol event as ``(name, payload)``, the terminal one included."""
        reader: _Reader[Event] = _Reader(self._loop, self._read_raw)
        return reader

    def start(self) -> SyncStream:
        self._loop.run(self.stream.start())
        return self

    def result(self) -> Done:
        for _ in self:
            pass
        return self._loop.run(self.stream.result())

    def cancel(self) -> None:
        self._loop.run(self.stream.cancel())


class SyncRoom:
    """``for event in room`` until the room is left. See :class:`Room`."""

    def __init__(self, loop: _Loop, room: Room) -> None:
        self.room = room
        self._loop = loop
        self._events: _Reader[RoomEvent] = _Reader(loop, self._read)

    @property
    def name(self) -> str:
        return self.room.name

    @property
    def members(self) -> tuple[Member, ...]:
        return self.room.members

    @property
    def history(self) -> tuple[Message, ...]:
        return self.room.history

    async def _read(self) -> RoomEvent | _End:
        try:
            return await self.room.__anext__()
        except StopAsyncIteration:
            return _END

    def __iter__(self) -> Iterator[RoomEvent]:
        return self

    def __next__(self) -> RoomEvent:
        return next(self._events)

    def stream(self, messages: Messages, **options: Any) -> SyncStream:
        return SyncStream(self._loop, self.room.stream(messages, **options))

    def leave(self) -> None:
        self._loop.run(self.room.leave())


class SyncChatClient:
    """The blocking twin of :class:`ChatClient`, with the same arguments."""

    def __init__(self, url: str, *, token: TokenSource = None, **options: Any) -> None:
        self._loop = _Loop()

        async def build() -> ChatClient:
            return ChatClient(url, token=token, **options)

        self.client = self._loop.run(build())

    @property
    def session(self) -> Session | None:
        return self.client.session

    @property
    def last_done(self) -> Done | None:
        return self.client.last_done

    def connect(self) -> Session:
        return self._loop.run(self.client.connect())

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Disconnect, waiting at most ``timeout`` s for the goodbye and again for the loop."""
        try:
            self._loop.run(self.client.close(), timeout)
        except concurrent.futures.TimeoutError:
            pass
        finally:
            self._loop.stop(timeout)

    def __enter__(self) -> SyncChatClient:
        try:
            self.connect()
        except BaseException:
            self._loop.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # After Ctrl-C the user wants out now; the server also notices a dropped socket.
        interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        self.close(INTERRUPTED_CLOSE_TIMEOUT_S if interrupted else CLOSE_TIMEOUT_S)

    def stream(self, messages: Messages, **options: Any) -> SyncStream:
        return SyncStream(self._loop, self.client.stream(messages, **options))

    def complete(self, messages: Messages, **options: Any) -> str:
        return self._loop.run(self.client.complete(messages, **options))

    def run_tools(self, messages: Messages, tools: Tools, **options: Any) -> ToolRun:
        """See :meth:`ChatClient.run_tools`; the tools run on the client's loop thread."""
        return self._loop.run(self.client.run_tools(messages, tools, **options))

    def cancel(self, request_id: str) -> None:
        self._loop.run(self.client.cancel(request_id))

    def join(self, room: str) -> SyncRoom:
        return SyncRoom(self._loop, self._loop.run(self.client.join(room)))

    def leave(self, room: str) -> None:
        self._loop.run(self.client.leave(room))
