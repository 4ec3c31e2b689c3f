"""The generations running on this process: one per accepted chat request.

A generation belongs to a connection while its client is there.  When the client's
transport is lost the generation is *detached*: it keeps running for the grace period
so it can be resumed, and is cancelled if nobody comes back in time.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class StopReason(StrEnum):
    CANCEL = "cancel"  # the owner asked
    DISCONNECT = "disconnect"  # the client left on purpose
    ABANDONED = "abandoned"  # transport lost and nobody resumed in time
    SHUTDOWN = "shutdown"  # the server is stopping


@dataclass(eq=False, slots=True)
class Generation:
    key: str
    request_id: str
    owner: str
    conn_id: str | None
    room: str | None = None
    task: asyncio.Task[None] | None = None
    stop_reason: StopReason | None = None
    grace: asyncio.TimerHandle | None = field(default=None, repr=False)

    def stop(self, reason: StopReason) -> bool:
        """Cancel the generation's task; the first reason given wins."""
        if self.task is None or self.task.done():
            return False
        if self.stop_reason is None:
            self.stop_reason = reason
        self.task.cancel()
        return True


class GenerationRegistry:
    def __init__(self) -> None:
        self._by_key: dict[str, Generation] = {}
        self._by_conn: dict[str, set[Generation]] = {}
        self._per_user: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: str) -> Generation | None:
        return self._by_key.get(key)

    def add(self, gen: Generation) -> None:
        self._by_key[gen.key] = gen
        self._per_user[gen.owner] += 1
        if gen.conn_id is not None:
            self._by_conn.setdefault(gen.conn_id, set()).add(gen)

    def remove(self, gen: Generation) -> None:
        if self._by_key.get(gen.key) is not gen:
            return
        del self._by_key[gen.key]
        self._per_user[gen.owner] -= 1
        if self._per_user[gen.owner] <= 0:
            del self._per_user[gen.owner]
        self._unlink(gen)
        if gen.grace is not None:
            gen.grace.cancel()
            gen.grace = None

    def _unlink(self, gen: Generation) -> None:
        if gen.conn_id is None:
            return
        gens = self._by_conn.get(gen.conn_id)
        if gens is not None:
            gens.discard(gen)
            if not gens:
                del self._by_conn[gen.conn_id]
        gen.conn_id = None

    def count_for_connection(self, conn_id: str) -> int:
        return len(self._by_conn.get(conn_id, ()))

    def count_for_user(self, owner: str) -> int:
        return self._per_user.get(owner, 0)

    def for_connection(self, conn_id: str) -> list[Generation]:
        return list(self._by_conn.get(conn_id, ()))

    def all(self) -> list[Generation]:
        return list(self._by_key.values())

    def stop_connection(self, conn_id: str, reason: StopReason) -> int:
        """Stop the connection's private generations now (deliberate disconnect).

        A room's answer streams on for the room's other members.
        """
        stopped = 0
        for gen in self.for_connection(conn_id):
            if gen.room is None:
                stopped += gen.stop(reason)
            else:
                self._unlink(gen)
        return stopped

    def detach_connection(
        self,
        conn_id: str,
        grace_s: float,
        on_abandon: Callable[[Generation], None] | None = None,
    ) -> int:
        """The connection's transport is gone: keep its generations for ``grace_s``."""
        gens = self.for_connection(conn_id)
        loop = asyncio.get_running_loop()
        for gen in gens:
            self._unlink(gen)
            if gen.room is not None:
                continue  # a room's answer streams on for the room's other members
            gen.grace = loop.call_later(grace_s, self._abandon, gen, on_abandon)
        return len(gens)

    def _abandon(self, gen: Generation, on_abandon: Callable[[Generation], None] | None) -> None:
        gen.grace = None
        if gen.stop(StopReason.ABANDONED) and on_abandon is not None:
            on_abandon(gen)

    def attach(self, gen: Generation, conn_id: str) -> None:
        """Someone resumed: the generation is wanted again."""
        if gen.grace is not None:
            gen.grace.cancel()
            gen.grace = None
        if gen.conn_id is None and gen.key in self._by_key:
            gen.conn_id = conn_id
            self._by_conn.setdefault(conn_id, set()).add(gen)

    async def wait_idle(self, seconds: float) -> bool:
        """Wait until no generation runs, at most ``seconds``."""
        tasks = [gen.task for gen in self._by_key.values() if gen.task is not None]
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=seconds)
        return not pending
