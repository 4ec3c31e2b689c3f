"""The stream log: every event of a request, in order, kept for resume.

A request's log holds its ``token`` events (the i-th has ``seq == i``) and, once it
ends, one terminal event.  ``tail(after_seq)`` replays what is there and then waits
for more until the terminal event, so a resumed client gets each token exactly once.

``MemoryStreamLog`` serves one process; ``services.redis_streamlog`` holds the same
in Redis Streams so a client may come back on any node.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

Event = tuple[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class StreamMeta:
    """Who may resume a stream: its owner, or members of its room."""

    key: str
    request_id: str
    owner: str
    room: str | None = None


def stream_key(owner: str, request_id: str) -> str:
    """Request ids belong to their user: the key joins both (``|`` is in neither charset)."""
    return f"{request_id}|{owner}"


class StreamLog(Protocol):
    async def open(self, meta: StreamMeta) -> None: ...
    async def append(self, key: str, event: str, payload: dict[str, Any]) -> None: ...
    async def close(self, key: str, event: str, payload: dict[str, Any]) -> None: ...
    async def meta(self, key: str) -> StreamMeta | None: ...
    async def find_in_room(self, room: str, request_id: str) -> StreamMeta | None: ...
    def tail(self, key: str, after_seq: int) -> AsyncIterator[Event]: ...
    async def size(self) -> int: ...
    async def aclose(self) -> None: ...


@dataclass(slots=True, eq=False)
class _Record:
    meta: StreamMeta
    events: list[Event] = field(default_factory=list)
    finished: bool = False
    changed: asyncio.Event | None = None
    expiry: asyncio.TimerHandle | None = None


class MemoryStreamLog:
    """In-process log; a finished stream is dropped ``retention_s`` after it ended."""

    def __init__(self, *, retention_s: float, max_events: int = 100_000) -> None:
        self._retention_s = retention_s
        self._max_events = max_events
        self._records: dict[str, _Record] = {}
        self._rooms: dict[tuple[str, str], str] = {}

    async def open(self, meta: StreamMeta) -> None:
        old = self._records.pop(meta.key, None)
        if old is not None:
            self._drop(old)
        self._records[meta.key] = _Record(meta)
        if meta.room is not None:
            self._rooms[(meta.room, meta.request_id)] = meta.key

    async def append(self, key: str, event: str, payload: dict[str, Any]) -> None:
        record = self._records.get(key)
        if record is None or record.finished or len(record.events) >= self._max_events:
            return
        record.events.append((event, payload))
        if record.changed is not None:
            record.changed.set()
            record.changed = None

    async def close(self, key: str, event: str, payload: dict[str, Any]) -> None:
        record = self._records.get(key)
        if record is None or record.finished:
            return
        record.events.append((event, payload))
        record.finished = True
        if record.changed is not None:
            record.changed.set()
            record.changed = None
        loop = asyncio.get_running_loop()
        record.expiry = loop.call_later(self._retention_s, self._expire, key, record)

    def _expire(self, key: str, record: _Record) -> None:
        if self._records.get(key) is record:
            del self._records[key]
            self._drop(record)

    def _drop(self, record: _Record) -> None:
        if record.expiry is not None:
            record.expiry.cancel()
        meta = record.meta
        if meta.room is not None and self._rooms.get((meta.room, meta.request_id)) == meta.key:
            del self._rooms[(meta.room, meta.request_id)]

    async def meta(self, key: str) -> StreamMeta | None:
        record = self._records.get(key)
        return record.meta if record is not None else None

    async def find_in_room(self, room: str, request_id: str) -> StreamMeta | None:
        key = self._rooms.get((room, request_id))
        return await self.meta(key) if key is not None else None

    async def tail(self, key: str, after_seq: int) -> AsyncIterator[Event]:
        record = self._records.get(key)
        if record is None:
            return
        position = max(after_seq + 1, 0)
        while True:
            events = record.events
            while position < len(events):
                event = events[position]
                position += 1
                yield event
            if record.finished:
                return
            if record.changed is None:
                record.changed = asyncio.Event()
            await record.changed.wait()

    async def size(self) -> int:
        return len(self._records)

    async def aclose(self) -> None:
        for record in self._records.values():
            self._drop(record)
        self._records.clear()
