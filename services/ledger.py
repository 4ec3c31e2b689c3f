"""The durable store at run time: migrations, the two background writers, the reads.

``Ledger.start`` waits for the migrations at most one call timeout; past that they go
on in the background and are retried until the database answers, so a relay whose
database is down still starts and chats (its rows wait in memory, bounded).
``record`` and ``archive`` never wait: the usage ledger and room history are written
off the hot path by ``BatchWriter``s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from services.storage.db.engine import Database, DatabaseUnavailable, safe_url
from services.storage.db.migrate import migrate
from services.storage.db.store import SqlStore, Totals, UsageRow
from services.storage.db.writer import BatchWriter

logger = logging.getLogger(__name__)

Message = dict[str, Any]


class Ledger:
    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        max_pending: int = 100_000,
        migrate_on_start: bool = True,
    ) -> None:
        self.db = Database(url, timeout_s=timeout_s)
        self.store = SqlStore(self.db)
        self._migrate_on_start = migrate_on_start
        self._ready: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.usage: BatchWriter[UsageRow] = BatchWriter(
            "usage ledger", self.store.add_usage, max_pending=max_pending, ready=self.wait_ready
        )
        self.rooms: BatchWriter[Message] = BatchWriter(
            "room history",
            self.store.add_room_messages,
            max_pending=max_pending,
            ready=self.wait_ready,
        )

    @property
    def ready(self) -> bool:
        return self._ready is not None and self._ready.is_set()

    async def wait_ready(self) -> None:
        if self._ready is None:
            self._ready = asyncio.Event()
        await self._ready.wait()

    async def start(self, wait_s: float | None = None) -> None:
        """Migrate; wait at most ``wait_s`` (the call timeout), then go on in the background."""
        if self._ready is None:
            self._ready = asyncio.Event()
        self.usage.start()
        self.rooms.start()
        self._task = asyncio.create_task(self._prepare(), name="ledger:migrate")
        limit = self.db.timeout_s if wait_s is None else wait_s
        await asyncio.wait({self._task}, timeout=limit)

    async def _prepare(self) -> None:
        assert self._ready is not None
        delay = 0.5
        while True:
            try:
                if self._migrate_on_start:
                    before = await migrate(self.db.engine, timeout_s=max(60.0, self.db.timeout_s))
                    if before is None:
                        logger.info("database %s: schema created", safe_url(self.db.url))
                self._ready.set()
                return
            except Exception as exc:
                logger.error(
                    "database %s: not ready (%s); retrying in %.1f s",
                    safe_url(self.db.url),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def backlog(self) -> tuple[int, int]:
        """Rows and messages waiting for the database, and those dropped so far."""
        return (
            self.usage.unwritten + self.rooms.unwritten,
            self.usage.dropped + self.rooms.dropped,
        )

    async def healthy(self) -> bool:
        """Migrated, no writer failing, and the database answers a ping (readiness)."""
        if not self.ready or self.usage.failing or self.rooms.failing:
            return False
        return await self.db.ping()

    def record(self, row: UsageRow) -> None:
        self.usage.put(row)

    def archive(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self.rooms.put(message)

    def _check(self) -> None:
        if not self.ready:
            raise DatabaseUnavailable("the database is not ready")

    async def spent(self, user: str, day: str) -> tuple[int, float]:
        """Tokens and cost of ``user`` on ``day`` (budgets seed their counters from it)."""
        self._check()
        totals = await self.store.spent(user, day, timeout_s=min(1.0, self.db.timeout_s))
        return totals.tokens, totals.cost

    async def usage_by_day(
        self, user: str | None, first: str, last: str
    ) -> list[tuple[str, str, Totals]]:
        self._check()
        return await self.store.usage_by_day(user, first, last)

    async def usage_by_model(
        self, user: str | None, first: str, last: str
    ) -> list[tuple[str | None, Totals]]:
        self._check()
        return await self.store.usage_by_model(user, first, last)

    async def room_history(self, room: str, *, limit: int, since_ts: float) -> list[Message]:
        self._check()
        return await self.store.room_history(
            room, limit=limit, since_ts=since_ts, timeout_s=min(2.0, self.db.timeout_s)
        )

    async def aclose(self, timeout_s: float = 5.0) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(self.usage.aclose(timeout_s), self.rooms.aclose(timeout_s))
        await self.db.aclose()
