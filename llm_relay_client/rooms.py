"""A joined room: its members, its history and an async iterator of its events."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from llm_relay_client.errors import ChatError
from llm_relay_client.models import (
    Member,
    Message,
    Messages,
    Payload,
    Presence,
    RoomEvent,
    room_event,
)
from llm_relay_client.stream import Stream

MAX_QUEUED = 10_000  # events kept for a reader that is not reading; the oldest go first
MAX_SEEN = 2_000  # message ids remembered to drop repeats after a rejoin


class RoomHost(Protocol):
    async def leave(self, room: str) -> None: ...

    @property
    def stream(self) -> Callable[..., Stream]: ...


class _End:
    def __init__(self, error: ChatError | None) -> None:
        self.error = error


class Room:
    """``async for event in room`` yields :data:`RoomEvent` s: ``Message``, ``Presence``,
    ``Token``, ``Done`` and ``Failure``, in the order the server sent them, until the room
    is left or the client closes. Events are kept from the moment of joining.
    """

    def __init__(self, host: RoomHost, name: str) -> None:
        self.name = name
        self.members: tuple[Member, ...] = ()
        self.history: tuple[Message, ...] = ()
        self.joined = False
        self._host = host
        self._queue: asyncio.Queue[RoomEvent | _End] = asyncio.Queue()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._ended = False

    def _mark_seen(self, message_id: str) -> bool:
        """Remember a message id; ``False`` if it was seen already."""
        if not message_id:
            return True
        if message_id in self._seen:
            return False
        self._seen[message_id] = None
        if len(self._seen) > MAX_SEEN:
            self._seen.popitem(last=False)
        return True

    def _put(self, item: RoomEvent | _End) -> None:
        if self._queue.qsize() >= MAX_QUEUED:
            self._queue.get_nowait()
        self._queue.put_nowait(item)

    def _joined(self, ack: Payload) -> None:
        """The first ``join`` acknowledgement: members and history."""
        self.joined = True
        self.members = Presence.parse({"members": ack.get("members")}).members
        raw = ack.get("history")
        history = [Message.parse(m, self.name) for m in raw] if isinstance(raw, list) else []
        for message in history:
            self._mark_seen(message.id)
        self.history = tuple(history)

    def _rejoined(self, ack: Payload) -> None:
        """After a reconnect: messages missed meanwhile come as events, once."""
        self.members = Presence.parse({"members": ack.get("members")}).members
        raw = ack.get("history")
        for item in raw if isinstance(raw, list) else []:
            message = Message.parse(item, self.name)
            if self._mark_seen(message.id):
                self._put(message)

    def _feed(self, event: str, payload: Payload) -> None:
        if self._ended:
            return
        item = room_event(event, payload)
        if item is None:
            return
        if isinstance(item, Message) and not self._mark_seen(item.id):
            return
        if isinstance(item, Presence):
            self.members = item.members
        self._put(item)

    def _end(self, error: ChatError | None = None) -> None:
        if not self._ended:
            self._ended = True
            self.joined = False
            self._put(_End(error))

    def __aiter__(self) -> Room:
        return self

    async def __anext__(self) -> RoomEvent:
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # every later read ends too
            if item.error is not None:
                error, item.error = item.error, None
                raise error
            raise StopAsyncIteration
        return item

    def stream(self, messages: Messages, **options: Any) -> Stream:
        """Say something in the room; the stream yields the model's reply."""
        return self._host.stream(messages, room=self.name, **options)

    async def leave(self) -> None:
        await self._host.leave(self.name)
