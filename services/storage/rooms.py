"""Room state: members, presence and a bounded conversation per room.

A room's *members* are users (``{id, name}``) with one or more connections in it; the
member list changes when a user's first connection joins or last one leaves.  A room's
*history* is its conversation: at most ``history_limit`` messages, none older than
``max_age_s``, oldest first.  The same history, trimmed to a size budget, is what the
model is sent.

``MemoryRoomStore`` serves one process; ``services.storage.redis_rooms.RedisRoomStore`` keeps
the same in Redis so every node sees every member and message.  Stored messages are
plain JSON objects (the ``message`` event's payload); nothing is ever pickled.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Message = dict[str, Any]  # {room, id, user: {id, name}, role, content, ts}
Clock = Callable[[], float]

ASSISTANT_ID = "assistant"
_UPSTREAM_NAME = re.compile(r"[^A-Za-z0-9_-]+")


class RoomsUnavailable(Exception):
    """The shared room state cannot be reached (Redis is down)."""


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    name: str

    def to_wire(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name}


@dataclass(frozen=True, slots=True)
class LocalConnection:
    """What this process knows of one of its connections (the truth it re-asserts)."""

    conn_id: str
    member: Member
    rooms: frozenset[str]


class RoomStore(Protocol):
    async def join(
        self, room: str, conn_id: str, member: Member
    ) -> tuple[list[Member], list[Message]]:
        """Add a connection; return the members and the history."""
        ...

    async def leave(self, room: str, conn_id: str) -> list[Member]:
        """Remove a connection; return the members left."""
        ...

    async def members(self, room: str) -> list[Member]: ...

    async def append(self, room: str, messages: Sequence[Message]) -> list[Message]:
        """Append to the history; return the history with these messages last."""
        ...

    async def history(self, room: str) -> list[Message]: ...

    async def connected(self, conn_id: str) -> None: ...

    async def disconnected(self, conn_id: str) -> None: ...

    async def is_connection(self, name: str) -> bool:
        """Is ``name`` the id of a live connection (on any node)?"""
        ...

    async def maintain(self, local: Callable[[], Iterable[LocalConnection]]) -> list[str]:
        """Periodic upkeep; return rooms whose members changed (to announce)."""
        ...

    async def aclose(self) -> list[str]:
        """Forget this process's connections; return the rooms they were in."""
        ...


def new_message(
    room: str, member: Member, role: str, content: Any, ts: float | None = None
) -> Message:
    return {
        "room": room,
        "id": "msg_" + secrets.token_urlsafe(12),
        "user": member.to_wire(),
        "role": role,
        "content": content,
        "ts": round(time.time() if ts is None else ts, 3),
    }


def content_size(content: Any) -> int:
    """Characters a message's content weighs against the budget (text and image URLs)."""
    if isinstance(content, str):
        return len(content)
    size = 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                size += len(text) if isinstance(text, str) else 0
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else None
                size += len(url) if isinstance(url, str) else 0
    return size


def upstream_name(display_name: str) -> str | None:
    """A display name in the form OpenAI-style APIs accept for ``messages[].name``."""
    name = _UPSTREAM_NAME.sub("_", display_name).strip("_")[:64]
    return name or None


def conversation(history: Sequence[Message], budget_chars: int) -> list[dict[str, Any]]:
    """The messages for the model: oldest first, the oldest dropped beyond the budget.

    The newest message is always kept.  User messages carry their author's name so the
    model can tell the members apart.
    """
    kept: list[dict[str, Any]] = []
    total = 0
    for message in reversed(history):
        size = content_size(message.get("content"))
        if kept and total + size > budget_chars:
            break
        total += size
        out: dict[str, Any] = {"role": message["role"], "content": message["content"]}
        if message["role"] == "user":
            user = message.get("user")
            name = upstream_name(str(user.get("name", ""))) if isinstance(user, dict) else None
            if name:
                out["name"] = name
        kept.append(out)
    kept.reverse()
    return kept


def group_members(entries: Iterable[tuple[float, Member]]) -> list[Member]:
    """Connections → users, each once, in the order of their first connection's join."""
    first: dict[str, tuple[float, Member]] = {}
    for joined, member in entries:
        seen = first.get(member.id)
        if seen is None or joined < seen[0]:
            first[member.id] = (joined, member)
    return [member for _joined, member in sorted(first.values(), key=lambda item: item[0])]


@dataclass(slots=True, eq=False)
class _Room:
    conns: dict[str, tuple[float, Member]] = field(default_factory=dict)
    history: deque[Message] = field(default_factory=deque)


class MemoryRoomStore:
    """Rooms of one process.  An empty room is dropped once its history has aged out."""

    def __init__(self, *, history_limit: int, max_age_s: float, clock: Clock = time.time) -> None:
        self._limit = history_limit
        self._max_age = max_age_s
        self._clock = clock
        self._rooms: dict[str, _Room] = {}
        self._conn_ids: set[str] = set()
        self._seq = 0.0

    def _fresh(self, room: _Room) -> list[Message]:
        cutoff = self._clock() - self._max_age
        history = room.history
        while history and history[0]["ts"] < cutoff:
            history.popleft()
        return list(history)

    async def join(
        self, room: str, conn_id: str, member: Member
    ) -> tuple[list[Member], list[Message]]:
        state = self._rooms.setdefault(room, _Room(history=deque(maxlen=self._limit)))
        if conn_id not in state.conns:
            self._seq += 1
            state.conns[conn_id] = (self._seq, member)
        return group_members(state.conns.values()), self._fresh(state)

    async def leave(self, room: str, conn_id: str) -> list[Member]:
        state = self._rooms.get(room)
        if state is None:
            return []
        state.conns.pop(conn_id, None)
        if not state.conns and not self._fresh(state):
            del self._rooms[room]
        return group_members(state.conns.values())

    async def members(self, room: str) -> list[Member]:
        state = self._rooms.get(room)
        return group_members(state.conns.values()) if state is not None else []

    async def append(self, room: str, messages: Sequence[Message]) -> list[Message]:
        state = self._rooms.setdefault(room, _Room(history=deque(maxlen=self._limit)))
        state.history.extend(messages)
        return self._fresh(state)

    async def history(self, room: str) -> list[Message]:
        state = self._rooms.get(room)
        return self._fresh(state) if state is not None else []

    async def connected(self, conn_id: str) -> None:
        self._conn_ids.add(conn_id)

    async def disconnected(self, conn_id: str) -> None:
        self._conn_ids.discard(conn_id)

    async def is_connection(self, name: str) -> bool:
        return name in self._conn_ids

    async def maintain(self, local: Callable[[], Iterable[LocalConnection]]) -> list[str]:
        for name in [name for name, state in self._rooms.items() if not state.conns]:
            if not self._fresh(self._rooms[name]):
                del self._rooms[name]
        return []

    async def aclose(self) -> list[str]:
        self._rooms.clear()
        self._conn_ids.clear()
        return []

    def __len__(self) -> int:
        return len(self._rooms)
