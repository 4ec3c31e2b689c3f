"""Room history that survives every node: a ``RoomStore`` backed by the durable store.

Wraps the live store (memory or Redis) and changes two things: appended messages are
also archived (off the hot path, by the ledger's writer), and a ``join`` or ``history``
that finds no live history reads the room's recent messages from the database and puts
them back into the live store, so the conversation goes on after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.storage.rooms import LocalConnection, Member, Message, RoomStore

logger = logging.getLogger(__name__)


class RoomArchive(Protocol):
    def archive(self, messages: Sequence[Message]) -> None: ...

    async def room_history(self, room: str, *, limit: int, since_ts: float) -> list[Message]: ...


class RestoreLock(Protocol):
    """One node restores a room at a time (after a restart, clients rejoin every node at once)."""

    async def acquire(self, room: str) -> bool: ...

    async def release(self, room: str) -> None: ...

    async def held(self, room: str) -> bool: ...


class RedisRestoreLock:
    """``SET NX PX`` per room; on a Redis error every node may restore (the live store is
    down as well then, so there is nothing to double)."""

    def __init__(
        self, redis: aioredis.Redis, *, prefix: str, ttl_s: float = 10.0, timeout_s: float = 2.0
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl_ms = int(ttl_s * 1000)
        self._timeout = timeout_s

    def _key(self, room: str) -> str:
        return f"{self._prefix}room-restore:{room}"

    async def acquire(self, room: str) -> bool:
        try:
            won = await asyncio.wait_for(
                self._redis.set(self._key(room), 1, nx=True, px=self._ttl_ms), self._timeout
            )
        except (RedisError, OSError, TimeoutError):
            return True
        return bool(won)

    async def release(self, room: str) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):  # else it expires
            await asyncio.wait_for(self._redis.delete(self._key(room)), self._timeout)

    async def held(self, room: str) -> bool:
        try:
            found = await asyncio.wait_for(self._redis.exists(self._key(room)), self._timeout)
        except (RedisError, OSError, TimeoutError):
            return False
        return bool(found)


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
        lock: RestoreLock | None = None,
        wait_restore_s: float = 2.0,
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
        self._lock = lock
        self._wait_restore_s = wait_restore_s

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
        if self._lock is None:
            return await self._fetch(room, history)
        if not await self._lock.acquire(room):
            return await self._restored_elsewhere(room, history)
        try:
            return await self._fetch(room, history)
        finally:
            await self._lock.release(room)

    async def _fetch(self, room: str, history: list[Message]) -> list[Message]:
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

    async def _restored_elsewhere(self, room: str, history: list[Message]) -> list[Message]:
        """Another node restores this room: wait (bounded) for its history to appear."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_restore_s
        assert self._lock is not None
        while loop.time() < deadline:
            await asyncio.sleep(0.05)
            current = await self.live.history(room)
            if current or not await self._lock.held(room):
                return current
        return history

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
