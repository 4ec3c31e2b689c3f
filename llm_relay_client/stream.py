"""One chat request as its caller sees it: an async iterator of text (or of typed events),
then ``done``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from types import TracebackType
from typing import Protocol

from llm_relay_client.errors import ChatError
from llm_relay_client.models import Done, Failure, Payload, StreamEvent, stream_event

# (event name, payload as sent by the server): "token", "reasoning", "tool_call", "done", "error"
Event = tuple[str, Payload]


class StreamHost(Protocol):
    async def _begin(self, stream: Stream) -> None: ...
    async def cancel(self, request_id: str) -> None: ...


class Stream:
    """The answer to one ``chat`` request.

    ``async for text in stream`` yields the answer's pieces in order, each exactly once
    (also across a reconnect); afterwards ``stream.done`` holds the ``done`` event
    (``finish_reason``, ``model``, ``usage``, ``tool_calls``...). An ``error`` event is
    raised as :class:`ChatError`. ``stream.events()`` yields every event instead, typed
    (``Reasoning``, ``Token``, ``ToolCallDelta``, then ``Done`` or ``Failure``), in ``seq``
    order. The request is sent when iteration (or ``async with``) starts.
    """

    def __init__(
        self, host: StreamHost, request_id: str, room: str | None, payload: Payload
    ) -> None:
        self.request_id = request_id
        self.room = room
        self.payload = payload
        self.done: Done | None = None
        self.error: ChatError | None = None
        self._host = host
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._parts: list[str] = []
        self._reasoning: list[str] = []
        self._started = False
        self._received_end = False  # the terminal event arrived (maybe not yet read)
        self._ended = False  # the terminal event was read
        self._raised = False

    @property
    def text(self) -> str:
        """The text received so far (the whole answer once iteration ended)."""
        return "".join(self._parts)

    @property
    def reasoning(self) -> str:
        """The reasoning text received so far."""
        return "".join(self._reasoning)

    @property
    def finished(self) -> bool:
        return self._received_end

    def _feed(self, event: str, payload: Payload) -> None:
        if self._received_end:
            return
        if event in ("done", "error"):
            self._received_end = True
        self._queue.put_nowait((event, payload))

    async def start(self) -> Stream:
        """Send the request now (iteration does it when needed)."""
        if not self._started:
            self._started = True
            try:
                await self._host._begin(self)
            except ChatError as exc:
                self._feed("error", {**exc.to_dict(), "request_id": self.request_id})
        return self

    async def next_raw(self) -> Event | None:
        """The next event as ``(name, payload)`` as the server sent it; ``None`` after the
        terminal one."""
        await self.start()
        if self._ended:
            return None
        event, payload = await self._queue.get()
        if event in ("token", "reasoning"):
            content = payload.get("content")
            if isinstance(content, str):
                (self._parts if event == "token" else self._reasoning).append(content)
        elif event == "done":
            self.done = Done.parse(payload)
            self._ended = True
        elif event == "error":
            self.error = ChatError.from_wire(payload, self.request_id)
            self._ended = True
        return event, payload

    async def next_event(self) -> StreamEvent | None:
        """The next event, typed; ``None`` after the terminal one."""
        while (item := await self.next_raw()) is not None:
            event, payload = item
            if event == "error" and self.error is not None:
                room = payload.get("room")
                room = room if isinstance(room, str) else None
                return Failure(self.error.request_id, self.error, room, self.error.last_seq)
            typed = stream_event(event, payload)
            if typed is not None:
                return typed
        return None

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Every event of the request, typed, in ``seq`` order, the terminal one included
        (a ``Failure`` is yielded, not raised)."""
        while (item := await self.next_event()) is not None:
            yield item

    async def raw_events(self) -> AsyncIterator[Event]:
        """Every event as ``(name, payload)``, the terminal one included."""
        while (item := await self.next_raw()) is not None:
            yield item

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> str:
        while True:
            item = await self.next_raw()
            if item is None:
                if self.error is not None and not self._raised:
                    self._raised = True
                    raise self.error
                raise StopAsyncIteration
            event, payload = item
            if event == "token":
                content = payload.get("content")
                if isinstance(content, str) and content:
                    return content
            elif event == "error" and self.error is not None:
                self._raised = True
                raise self.error

    async def result(self) -> Done:
        """Read the stream to its end; return ``done`` or raise the error."""
        async for _ in self:
            pass
        if self.done is None:  # pragma: no cover - the loop raised otherwise
            raise ChatError("internal", "The stream ended without a result.")
        return self.done

    async def cancel(self) -> None:
        """Ask the server to stop; the stream then ends with ``finish_reason == "cancelled"``."""
        if not self._started or self._received_end:
            return
        try:
            await self._host.cancel(self.request_id)
        except ChatError as exc:
            if exc.code != "not_found":  # not_found: it ended meanwhile
                raise

    async def __aenter__(self) -> Stream:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Leaving early (``break``, an exception) cancels the request on the server."""
        if not self._received_end:
            with suppress(ChatError):
                await self.cancel()
