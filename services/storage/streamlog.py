"""The stream log: every event of a request, in order, kept for resume.

A request's log holds its ``token`` events (the i-th has ``seq == i``) and, once it
ends, one terminal event.  ``tail(after_seq)`` gives the events after ``after_seq``
and then waits for more until the terminal event (given in any case), so a resumed
client gets each token exactly once.  A log keeps at most ``max_events`` events per
request; beyond that the *oldest* go, and a tail that would need them raises
``StreamLost`` instead of skipping them.

``MemoryStreamLog`` serves one process; ``services.storage.redis_streamlog`` holds the same
in Redis Streams so a client may come back on any node.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Event = tuple[str, dict[str, Any]]
LostReason = Literal["trimmed", "expired", "orphaned"]


@dataclass(frozen=True, slots=True)
class StreamMeta:
    """Who may resume a stream (its owner, or members of its room), and where it runs."""

    key: str
    request_id: str
    owner: str
    room: str | None = None
    node: str | None = None  # the node running the generation (None: this process)
    ended: bool = False  # the terminal event is in the log
    lazy: bool = False  # its events are kept on its node until someone may need them


class StreamLost(Exception):
    """The log cannot give the rest of a stream: never a silent gap.

    ``trimmed``: events that were asked for are no longer kept; ``expired``: the whole
    stream is gone; ``orphaned``: the node that ran it stopped before it ended.
    """

    def __init__(self, reason: LostReason) -> None:
        super().__init__(reason)
        self.reason: LostReason = reason


def stream_key(owner: str, request_id: str) -> str:
    """Request ids belong to their user: the key joins both (``|`` is in neither charset)."""
    return f"{request_id}|{owner}"


class StreamLog(Protocol):
    async def open(self, meta: StreamMeta) -> None: ...
    async def append(self, key: str, event: str, payload: dict[str, Any]) -> None: ...
    async def close(self, key: str, event: str, payload: dict[str, Any]) -> None: ...
    async def meta(self, key: str) -> StreamMeta | None: ...
    async def find(self, request_id: str) -> list[StreamMeta]:
        """Every stream with this ``request_id``, whoever owns it."""
        ...

    async def find_in_room(self, room: str, request_id: str) -> StreamMeta | None: ...
    async def retained_from(self, key: str) -> int:
        """The lowest ``seq`` still kept (0 unless the stream outgrew ``max_events``)."""
        ...

    def tail(self, key: str, after_seq: int) -> AsyncIterator[Event]: ...
    async def size(self) -> int:
        """How many streams the log holds (live and retained)."""
        ...

    async def materialize(self, key: str) -> bool:
        """Make a lazily kept stream of this node readable from the log (see
        ``services.storage.redis_streamlog``); ``False`` if this node does not run it."""
        ...

    async def aclose(self) -> None: ...


@dataclass(slots=True, eq=False)
class _Record:
    meta: StreamMeta
    events: list[Event] = field(default_factory=list)
    base: int = 0  # index of events[0] (events before it were trimmed)
    finished: bool = False
    changed: asyncio.Event | None = None
    expiry: asyncio.TimerHandle | None = None


class MemoryStreamLog:
    """In-process log; a finished stream is dropped ``retention_s`` after it ended."""

    def __init__(self, *, retention_s: float, max_events: int = 100_000) -> None:
        self._retention_s = retention_s
        self._max_events = max_events
        self._records: dict[str, _Record] = {}
        self._by_request: dict[str, set[str]] = {}

    async def open(self, meta: StreamMeta) -> None:
        old = self._records.pop(meta.key, None)
        if old is not None:
            self._drop(old)
        self._records[meta.key] = _Record(meta)
        self._by_request.setdefault(meta.request_id, set()).add(meta.key)

    async def append(self, key: str, event: str, payload: dict[str, Any]) -> None:
        record = self._records.get(key)
        if record is None or record.finished:
            return
        record.events.append((event, payload))
        excess = len(record.events) - self._max_events
        if excess > 0:
            # Trim in steps so a long stream at the cap does not copy the list per token.
            excess = max(excess, self._max_events // 16)
            del record.events[:excess]
            record.base += excess
        self._wake(record)

    async def close(self, key: str, event: str, payload: dict[str, Any]) -> None:
        record = self._records.get(key)
        if record is None or record.finished:
            return
        record.events.append((event, payload))
        record.finished = True
        self._wake(record)
        loop = asyncio.get_running_loop()
        record.expiry = loop.call_later(self._retention_s, self._expire, key, record)

    @staticmethod
    def _wake(record: _Record) -> None:
        if record.changed is not None:
            record.changed.set()
            record.changed = None

    def _expire(self, key: str, record: _Record) -> None:
        if self._records.get(key) is record:
            del self._records[key]
            self._drop(record)

    def _drop(self, record: _Record) -> None:
        if record.expiry is not None:
            record.expiry.cancel()
        meta = record.meta
        keys = self._by_request.get(meta.request_id)
        if keys is not None and meta.key not in self._records:
            keys.discard(meta.key)
            if not keys:
                del self._by_request[meta.request_id]
        self._wake(record)  # a tail waiting on a dropped record ends (StreamLost)

    async def meta(self, key: str) -> StreamMeta | None:
        record = self._records.get(key)
        if record is None:
            return None
        return dataclasses.replace(record.meta, ended=True) if record.finished else record.meta

    async def find(self, request_id: str) -> list[StreamMeta]:
        found = []
        for key in self._by_request.get(request_id, ()):
            meta = await self.meta(key)
            if meta is not None:
                found.append(meta)
        return found

    async def find_in_room(self, room: str, request_id: str) -> StreamMeta | None:
        return in_room(await self.find(request_id), room)

    async def retained_from(self, key: str) -> int:
        record = self._records.get(key)
        return record.base if record is not None else 0

    async def tail(self, key: str, after_seq: int) -> AsyncIterator[Event]:
        record = self._records.get(key)
        if record is None:
            raise StreamLost("expired")
        position = max(after_seq + 1, 0)  # deliver events from this index on…
        # …and read from here: never past the terminal event, which is given in any case
        cursor = min(position, record.base + len(record.events) - record.finished)
        while True:
            if cursor < record.base:
                if max(cursor, position) < record.base:
                    raise StreamLost("trimmed")
                cursor = record.base
            offset = cursor - record.base
            if offset < len(record.events):
                event = record.events[offset]
                cursor += 1
                end = record.finished and offset == len(record.events) - 1
                if cursor > position or end:  # the terminal event always
                    yield event
                if end:
                    return
                continue
            if self._records.get(key) is not record:
                raise StreamLost("expired")
            if record.changed is None:
                record.changed = asyncio.Event()
            await record.changed.wait()

    async def size(self) -> int:
        return len(self._records)

    async def materialize(self, key: str) -> bool:
        return key in self._records  # one process: always readable

    async def aclose(self) -> None:
        records = list(self._records.values())
        self._records.clear()
        for record in records:
            self._drop(record)
        self._by_request.clear()


def in_room(metas: list[StreamMeta], room: str) -> StreamMeta | None:
    """The stream of ``room`` among those found for one request id."""
    return next((meta for meta in metas if meta.room == room), None)
