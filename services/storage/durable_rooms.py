"""Room history that survives every node: a ``RoomStore`` backed by the durable store.

Wraps the live store (memory or Redis) and changes two things: appended messages are
also archived (off the hot path, by the ledger's writer), and a ``join`` or ``history``
that finds no live history reads the room's recent messages from the database and puts
them back into the live store, so the conversation goes on after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from services.storage.rooms import LocalConnection, Member, Message, RoomStore

logger = logging.getLogger(__name__)


class RoomArchive(Protocol):
    def archive(self, messages: Sequence[Message]) -> None: ...

    async def room_history(self, room: str, *, limit: int, since_ts: float) -> list[Message]: ...


class DurableRoomStore:
    def __init__(
        self,
        live: RoomStore,
        archive: RoomArchive,
        *,
        history_limit: int,
        max_age_s: float,
        clock: Callable[[], float] = time.time,
        retry_s: float = 10.0,
    ) -> None:
        self.live = live
        self._archive = archive
        self._limit = history_limit
        self._max_age = max_age_s
        self._clock = clock
        self._restored: set[str] = set()  # rooms looked up in the archive by this process
        self._retry_s = retry_s
        self._down_until = 0.0  # after a failed lookup, joins do not wait on the archive
        self._lookups: dict[str, asyncio.Future[list[Message]]] = {}

    async def _restore(self, room: str, history: list[Message]) -> list[Message]:
        if history or self._clock() < self._down_until:
            return history
        lookup = self._lookups.get(room)
        if lookup is not None:  # another join of this room is restoring it: share that
            return await asyncio.shield(lookup)
        if room in self._restored:
            return history
        task = asyncio.ensure_future(self._lookup(room, history))
        self._lookups[room] = task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._lookups.pop(room, None)
            else:
                task.add_done_callback(lambda _t: self._lookups.pop(room, None))

    async def _lookup(self, room: str, history: list[Message]) -> list[Message]:
        if len(self._restored) >= 100_000:
            self._restored.clear()
        self._restored.add(room)
        try:
            found = await self._archive.room_history(
                room, limit=self._limit, since_ts=self._clock() - self._max_age
            )
        except Exception as exc:
            self._restored.discard(room)  # try again on a later join
            self._down_until = self._clock() + self._retry_s
            logger.warning("room %s: the stored history is unavailable (%s)", room, exc)
            return history
        if not found:
            return history
        current = await self.live.history(room)
        if current:  # another node restored it (or a message came) meanwhile
            return current
        return await self.live.append(room, found)

    async def join(
        self, room: str, conn_id: str, member: Member
    ) -> tuple[list[Member], list[Message]]:
        members, history = await self.live.join(room, conn_id, member)
        return members, await self._restore(room, history)

    async def leave(self, room: str, conn_id: str) -> list[Member]:
        return await self.live.leave(room, conn_id)

    async def members(self, room: str) -> list[Member]:
        return await self.live.members(room)

    async def append(self, room: str, messages: Sequence[Message]) -> list[Message]:
        if room not in self._restored:  # the model must see the restored conversation too
            await self._restore(room, await self.live.history(room))
        history = await self.live.append(room, messages)
        self._archive.archive(messages)
        return history

    async def history(self, room: str) -> list[Message]:
        return await self._restore(room, await self.live.history(room))

    async def connected(self, conn_id: str) -> None:
        await self.live.connected(conn_id)

    async def disconnected(self, conn_id: str) -> None:
        await self.live.disconnected(conn_id)

    async def is_connection(self, name: str) -> bool:
        return await self.live.is_connection(name)

    async def maintain(self, local: Callable[[], Iterable[LocalConnection]]) -> list[str]:
        return await self.live.maintain(local)

    async def aclose(self) -> list[str]:
        return await self.live.aclose()
