"""Room state in Redis, shared by every node (see ``services.storage.rooms`` for the model).

Keys, all under the configured prefix ``P``:

* ``P room:<room>:conns``   hash  conn_id → ``{"id", "name", "node", "t"}`` (JSON)
* ``P room:<room>:history`` list  of ``message`` payloads (JSON), newest last
* ``P rooms:node:<node>``         string with a TTL: the node is alive while it exists
* ``P rooms:node:<node>:members`` set ``"<room>|<conn_id>"`` of the node's memberships
* ``P rooms:node:<node>:sids``    set the node's connection ids (no room may be named so)
* ``P rooms:nodes``               set every node id seen and not yet swept

A node's own connections are the truth: it heartbeats its marker, and after any failed
write (or when its marker was gone, e.g. Redis restarted empty) it re-asserts all of
its memberships.  Members on a node whose marker expired are ignored at once and swept
away by the next live node.  Values are JSON; nothing is ever unpickled.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.storage.rooms import (
    Clock,
    LocalConnection,
    Member,
    Message,
    RoomsUnavailable,
    group_members,
)

logger = logging.getLogger(__name__)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _loads(raw: Any) -> Any:
    try:
        return orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        return None


class RedisRoomStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        history_limit: int,
        max_age_s: float,
        node_id: str | None = None,
        heartbeat_s: float = 5.0,
        clock: Clock = time.time,
    ) -> None:
        self._redis = redis
        self._p = prefix
        self._limit = history_limit
        self._max_age = max_age_s
        self._clock = clock
        self.node_id = node_id or secrets.token_hex(8)
        self.heartbeat_s = heartbeat_s
        self._node_ttl_ms = int(heartbeat_s * 3 * 1000)
        self._dirty = True  # the first heartbeat asserts everything
        self._down = False

    # -- keys ----------------------------------------------------------------------

    def _conns(self, room: str) -> str:
        return f"{self._p}room:{room}:conns"

    def _history(self, room: str) -> str:
        return f"{self._p}room:{room}:history"

    def _node(self, node: str, part: str = "") -> str:
        return f"{self._p}rooms:node:{node}{part}"

    @property
    def _nodes(self) -> str:
        return f"{self._p}rooms:nodes"

    # -- helpers ---------------------------------------------------------------------

    def _failed(self, what: str, exc: Exception) -> RoomsUnavailable:
        self._dirty = True
        if not self._down:
            self._down = True
            logger.warning("room state in Redis unavailable (%s): %s", what, exc)
        return RoomsUnavailable(what)

    def _entry(self, member: Member) -> bytes:
        return orjson.dumps(
            {"id": member.id, "name": member.name, "node": self.node_id, "t": self._clock()}
        )

    async def _alive(self, nodes: Iterable[str]) -> set[str]:
        others = sorted({node for node in nodes if node != self.node_id})
        alive = {self.node_id}
        if others:
            async with self._redis.pipeline(transaction=False) as pipe:
                for node in others:
                    pipe.exists(self._node(node))
                found = await pipe.execute()
            alive.update(node for node, exists in zip(others, found, strict=True) if exists)
        return alive

    async def _members_from(self, raw: dict[Any, Any]) -> list[Member]:
        entries: list[tuple[float, str, Member]] = []
        for value in raw.values():
            data = _loads(value)
            if not isinstance(data, dict):
                continue
            try:
                member = Member(str(data["id"]), str(data["name"]))
                entries.append((float(data["t"]), str(data["node"]), member))
            except (KeyError, TypeError, ValueError):
                continue
        alive = await self._alive(node for _t, node, _m in entries)
        return group_members((t, m) for t, node, m in entries if node in alive)

    def _fresh(self, raw: Sequence[Any]) -> list[Message]:
        cutoff = self._clock() - self._max_age
        out: list[Message] = []
        for value in raw:
            message = _loads(value)
            ts = message.get("ts") if isinstance(message, dict) else None
            if isinstance(ts, int | float) and ts >= cutoff:
                out.append(message)
        return out

    # -- membership ------------------------------------------------------------------

    async def join(
        self, room: str, conn_id: str, member: Member
    ) -> tuple[list[Member], list[Message]]:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(self._conns(room), conn_id, self._entry(member))
                pipe.sadd(self._node(self.node_id, ":members"), f"{room}|{conn_id}")
                pipe.hgetall(self._conns(room))
                pipe.lrange(self._history(room), 0, -1)
                _, _, conns, history = await pipe.execute()
            members = await self._members_from(conns)
        except RedisError as exc:
            raise self._failed("join", exc) from exc
        return members, self._fresh(history)

    async def leave(self, room: str, conn_id: str) -> list[Member]:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self._conns(room), conn_id)
                pipe.srem(self._node(self.node_id, ":members"), f"{room}|{conn_id}")
                pipe.hgetall(self._conns(room))
                _, _, conns = await pipe.execute()
            return await self._members_from(conns)
        except RedisError as exc:
            raise self._failed("leave", exc) from exc

    async def members(self, room: str) -> list[Member]:
        try:
            return await self._members_from(await self._redis.hgetall(self._conns(room)))
        except RedisError as exc:
            raise self._failed("members", exc) from exc

    async def connected(self, conn_id: str) -> None:
        try:
            await self._redis.sadd(self._node(self.node_id, ":sids"), conn_id)
        except RedisError as exc:
            raise self._failed("connect", exc) from exc

    async def disconnected(self, conn_id: str) -> None:
        try:
            await self._redis.srem(self._node(self.node_id, ":sids"), conn_id)
        except RedisError as exc:
            raise self._failed("disconnect", exc) from exc

    async def is_connection(self, name: str) -> bool:
        try:
            nodes = [_text(n) for n in await self._redis.smembers(self._nodes)]
            nodes.append(self.node_id)
            alive = await self._alive(nodes)
            async with self._redis.pipeline(transaction=False) as pipe:
                for node in sorted(alive):
                    pipe.sismember(self._node(node, ":sids"), name)
                return any(await pipe.execute())
        except RedisError as exc:
            raise self._failed("lookup", exc) from exc

    # -- history -----------------------------------------------------------------------

    async def append(self, room: str, messages: Sequence[Message]) -> list[Message]:
        key = self._history(room)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, *(orjson.dumps(message) for message in messages))
                pipe.ltrim(key, -self._limit, -1)
                pipe.expire(key, max(int(self._max_age), 1))
                pipe.lrange(key, 0, -1)
                *_, history = await pipe.execute()
        except RedisError as exc:
            raise self._failed("append", exc) from exc
        return self._fresh(history)

    async def history(self, room: str) -> list[Message]:
        try:
            return self._fresh(await self._redis.lrange(self._history(room), 0, -1))
        except RedisError as exc:
            raise self._failed("history", exc) from exc

    # -- upkeep ------------------------------------------------------------------------

    async def maintain(self, local: Callable[[], Iterable[LocalConnection]]) -> list[str]:
        """Heartbeat; re-assert our memberships if needed; sweep dead nodes."""
        try:
            marker = self._node(self.node_id)
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(marker, b"1", px=self._node_ttl_ms, get=True)
                pipe.sadd(self._nodes, self.node_id)
                previous, _ = await pipe.execute()
            changed: set[str] = set()
            if previous is None or self._dirty:
                self._dirty = False
                changed.update(await self._resync(local))
            changed.update(await self._sweep())
        except RedisError as exc:
            self._failed("heartbeat", exc)
            return []
        if self._down:
            self._down = False
            logger.info("room state in Redis available again")
        return sorted(changed)

    async def _resync(self, local: Callable[[], Iterable[LocalConnection]]) -> set[str]:
        members_key = self._node(self.node_id, ":members")
        sids_key = self._node(self.node_id, ":sids")
        had_members = {_text(m) for m in await self._redis.smembers(members_key)}
        had_sids = {_text(s) for s in await self._redis.smembers(sids_key)}
        # No awaits from here until the pipeline is sent: ``current`` is this instant.
        conns = list(local())
        current = {f"{room}|{c.conn_id}": (room, c) for c in conns for room in c.rooms}
        sids = {c.conn_id for c in conns}
        stale = had_members - current.keys()
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry in stale:
                room, _, conn_id = entry.partition("|")
                pipe.hdel(self._conns(room), conn_id)
            if stale:
                pipe.srem(members_key, *stale)
            if had_sids - sids:
                pipe.srem(sids_key, *(had_sids - sids))
            if sids:
                pipe.sadd(sids_key, *sids)
            for room, conn in current.values():
                pipe.hsetnx(self._conns(room), conn.conn_id, self._entry(conn.member))
            if current:
                pipe.sadd(members_key, *current)
            await pipe.execute()
        rooms = {entry.partition("|")[0] for entry in stale}
        rooms.update(room for room, _c in current.values())
        return rooms

    async def _sweep(self) -> set[str]:
        nodes = [_text(n) for n in await self._redis.smembers(self._nodes)]
        alive = await self._alive(nodes)
        rooms: set[str] = set()
        for node in nodes:
            if node in alive:
                continue
            lock = self._node(node, ":sweep")
            if not await self._redis.set(lock, self.node_id, nx=True, ex=30):
                continue
            members_key = self._node(node, ":members")
            entries = [_text(e) for e in await self._redis.smembers(members_key)]
            async with self._redis.pipeline(transaction=False) as pipe:
                for entry in entries:
                    room, _, conn_id = entry.partition("|")
                    pipe.hdel(self._conns(room), conn_id)
                    rooms.add(room)
                pipe.delete(members_key, self._node(node, ":sids"))
                pipe.srem(self._nodes, node)
                await pipe.execute()
            logger.info("swept %d memberships of node %s", len(entries), node)
        return rooms

    async def aclose(self) -> list[str]:
        """Graceful stop: remove this node's memberships; return the rooms affected."""
        members_key = self._node(self.node_id, ":members")
        try:
            entries = [_text(e) for e in await self._redis.smembers(members_key)]
            async with self._redis.pipeline(transaction=False) as pipe:
                for entry in entries:
                    room, _, conn_id = entry.partition("|")
                    pipe.hdel(self._conns(room), conn_id)
                pipe.delete(
                    members_key, self._node(self.node_id, ":sids"), self._node(self.node_id)
                )
                pipe.srem(self._nodes, self.node_id)
                await pipe.execute()
        except RedisError as exc:
            logger.warning("could not remove this node's rooms from Redis: %s", exc)
            return []
        return sorted({entry.partition("|")[0] for entry in entries})
