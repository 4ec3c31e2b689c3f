"""Rooms (PROTOCOL.md §1): ``join``, ``leave``, ``presence``, ``message``, ``chat`` with ``room``.

A public room ``lobby`` is the Socket.IO room ``room:lobby``.  python-socketio puts
every connection in a room named after its sid, and sids never contain ``:``, so no
name a client picks can reach another client's private events; names equal to a
connection id are refused as well, on every node.

Room state (members, history) lives behind ``services.storage.rooms.RoomStore``; this module
decides what is emitted.  Every emit goes to ``room_channel(name)`` of a validated,
non-empty name: a ``None`` target would reach the whole namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from auth.tokens import Identity
from events.core.admission import parse
from events.core.connections import Connection, Connections
from events.core.errors import ErrorCode, ProtocolError
from events.core.models import ChatRequest, RoomRequest
from events.core.pipeline import OnFinish, Payload
from services.storage.rooms import (
    ASSISTANT_ID,
    LocalConnection,
    Member,
    RoomStore,
    RoomsUnavailable,
    conversation,
    new_message,
)
from services.storage.streamlog import StreamLog

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "room:"
ROOMS_CLAIM = "rooms"
UNAVAILABLE = "Rooms are unavailable right now; try again shortly."


def room_channel(room: str) -> str:
    """The Socket.IO room of a public room name (never a sid: sids have no ``:``)."""
    if not room:
        raise ValueError("a room name is required")
    return CHANNEL_PREFIX + room


def room_allowed(claims: Mapping[str, Any], room: str) -> bool:
    """The optional ``rooms`` claim: a list of fnmatch patterns (or one pattern)."""
    patterns = claims.get(ROOMS_CLAIM)
    if patterns is None:
        return True
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list):
        return False
    return any(isinstance(p, str) and fnmatch.fnmatchcase(room, p) for p in patterns)


def member_of(identity: Identity) -> Member:
    return Member(identity.sub, identity.name)


class RoomServer(Protocol):
    """The parts of ``socketio.AsyncServer`` rooms use."""

    async def emit(self, event: str, data: Any = None, to: str | None = None) -> None: ...
    async def enter_room(self, sid: str, room: str) -> None: ...
    async def leave_room(self, sid: str, room: str) -> None: ...


class RoomEvents:
    def __init__(
        self,
        sio: RoomServer,
        store: RoomStore,
        connections: Connections,
        *,
        max_rooms_per_connection: int,
        context_chars: int,
        default_model: str,
        log: StreamLog | None = None,
        maintain_every_s: float = 5.0,
    ) -> None:
        self._sio = sio
        self.store = store
        self.connections = connections
        self.max_rooms = max_rooms_per_connection
        self.context_chars = context_chars
        self.default_model = default_model
        self.log = log
        self.maintain_every_s = maintain_every_s
        self._task: asyncio.Task[None] | None = None

    async def _broadcast(self, event: str, payload: Payload, room: str) -> None:
        await self._sio.emit(event, payload, to=room_channel(room))

    async def _presence(self, room: str, members: list[Member]) -> None:
        payload = {"room": room, "members": [m.to_wire() for m in members]}
        await self._broadcast("presence", payload, room)

    # -- connections -----------------------------------------------------------------

    async def connected(self, conn: Connection) -> None:
        with contextlib.suppress(RoomsUnavailable):  # re-asserted once Redis is back
            await self.store.connected(conn.conn_id)

    async def disconnected(self, conn: Connection) -> None:
        try:
            for room in sorted(conn.rooms):
                await self._left(conn, room)
            with contextlib.suppress(RoomsUnavailable):
                await self.store.disconnected(conn.conn_id)
        except Exception:
            logger.exception("leaving the rooms of %s failed", conn.conn_id)

    async def refreshed(self, conn: Connection) -> None:
        """A new token may allow fewer rooms: leave those it does not allow."""
        for room in sorted(conn.rooms):
            if not room_allowed(conn.identity.claims, room):
                await self._left(conn, room)

    async def _left(self, conn: Connection, room: str) -> None:
        conn.rooms.discard(room)
        await self._sio.leave_room(conn.conn_id, room_channel(room))
        try:
            members = await self.store.leave(room, conn.conn_id)
        except RoomsUnavailable:
            return  # the store re-syncs this node's memberships when it is back
        await self._presence(room, members)

    # -- join / leave ----------------------------------------------------------------

    async def _check_name(self, conn: Connection, room: str) -> None:
        if room.startswith("_"):
            raise ProtocolError(ErrorCode.FORBIDDEN, "Room names starting with _ are reserved.")
        if not room_allowed(conn.identity.claims, room):
            raise ProtocolError(ErrorCode.FORBIDDEN, "Your token does not allow this room.")
        if room in conn.rooms:
            return
        if self.connections.get(room) is not None or await self.store.is_connection(room):
            raise ProtocolError(ErrorCode.FORBIDDEN, "This room name is not available.")
        if len(conn.rooms) >= self.max_rooms:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"At most {self.max_rooms} rooms per connection."
            )

    async def join(self, conn: Connection, data: Any) -> Payload:
        room = parse(RoomRequest, data).room
        try:
            await self._check_name(conn, room)
            fresh = room not in conn.rooms
            conn.rooms.add(room)  # before the store: this node's truth leads Redis
            try:
                member = member_of(conn.identity)
                members, history = await self.store.join(room, conn.conn_id, member)
            except BaseException:
                if fresh:
                    conn.rooms.discard(room)
                raise
        except RoomsUnavailable:
            raise ProtocolError(ErrorCode.INTERNAL, UNAVAILABLE) from None
        if self.connections.get(conn.conn_id) is not conn:  # it disconnected meanwhile
            await self._left(conn, room)
            return {"ok": False}
        await self._sio.enter_room(conn.conn_id, room_channel(room))
        if fresh:
            await self._presence(room, members)
        return {
            "ok": True,
            "room": room,
            "members": [m.to_wire() for m in members],
            "history": history,
        }

    async def leave(self, conn: Connection, data: Any) -> Payload:
        room = parse(RoomRequest, data).room
        if room not in conn.rooms:
            raise ProtocolError(ErrorCode.NOT_FOUND, "You have not joined this room.")
        await self._left(conn, room)
        return {"ok": True}

    # -- chat with ``room`` (Relay.room_hook) ------------------------------------------

    async def chat_hook(self, conn: Connection, req: ChatRequest) -> tuple[list[Payload], OnFinish]:
        """Append and broadcast the new messages; return the conversation for the model."""
        room = req.room
        if not room or room not in conn.rooms:
            raise ProtocolError(ErrorCode.FORBIDDEN, "Join the room before chatting in it.")
        if not room_allowed(conn.identity.claims, room):
            raise ProtocolError(ErrorCode.FORBIDDEN, "Your token does not allow this room.")
        if req.request_id is not None and self.log is not None:
            # Every member sees the room's streams: one id, one stream (resume finds it).
            meta = await self.log.find_in_room(room, req.request_id)
            if meta is not None and meta.owner != conn.identity.sub:
                raise ProtocolError(
                    ErrorCode.INVALID_PAYLOAD,
                    "Another member's request in this room has this request_id.",
                    details=[{"field": "request_id", "message": "in use in this room"}],
                )
        author = member_of(conn.identity)
        new = [
            new_message(
                room, author, msg.role, msg.model_dump(mode="json", exclude_none=True)["content"]
            )
            for msg in req.messages
        ]
        try:
            history = await self.store.append(room, new)
        except RoomsUnavailable:
            raise ProtocolError(ErrorCode.INTERNAL, UNAVAILABLE) from None
        for message in new:
            await self._broadcast("message", message, room)
        model = req.model or self.default_model

        async def on_finish(request_id: str, text: str, _finish_reason: str | None) -> None:
            reply = new_message(room, Member(ASSISTANT_ID, model), "assistant", text)
            try:
                await self.store.append(room, [reply])
            except RoomsUnavailable:
                logger.warning("reply %s not kept in room history: rooms unavailable", request_id)

        return conversation(history, self.context_chars), on_finish

    # -- upkeep --------------------------------------------------------------------------

    def _local(self) -> list[LocalConnection]:
        return [
            LocalConnection(conn.conn_id, member_of(conn.identity), frozenset(conn.rooms))
            for conn in self.connections.all()
            if conn.transport == "socketio"
        ]

    async def maintain(self) -> None:
        for room in await self.store.maintain(self._local):
            try:
                await self._presence(room, await self.store.members(room))
            except RoomsUnavailable:
                return

    async def _run(self) -> None:
        while True:
            try:
                await self.maintain()
            except Exception:
                logger.exception("room upkeep failed")
            await asyncio.sleep(self.maintain_every_s)

    async def start(self) -> None:
        try:
            await self.maintain()
        except Exception:
            logger.exception("room upkeep failed")
        self._task = asyncio.create_task(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for room in await self.store.aclose():
            with contextlib.suppress(Exception):
                await self._presence(room, await self.store.members(room))
