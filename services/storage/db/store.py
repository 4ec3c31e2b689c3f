"""The durable store's one interface: usage rows in, usage sums out; room messages in and out.

Writes are idempotent (each row carries an id made before the first attempt), so a write
retried after a timeout that had in fact committed adds nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from services.storage.db.engine import Database
from services.storage.db.schema import LIMITS, clip, room_messages, usage

Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class UsageRow:
    id: str
    user_id: str
    day: str  # UTC, YYYY-MM-DD
    model: str | None
    request_id: str
    generation_id: str | None
    room: str | None
    transport: str | None
    outcome: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None
    reasoning_tokens: int | None
    cost: float
    usage_reported: bool
    accepted_at: float
    finished_at: float

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        for name, limit in LIMITS.items():
            row[name] = clip(row[name], limit)
        row["usage_reported"] = int(self.usage_reported)
        return row


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_wire(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": round(self.cost, 9),
        }


def _sums() -> list[Any]:
    return [
        func.count().label("requests"),
        func.coalesce(func.sum(usage.c.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(usage.c.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(usage.c.cost), 0.0).label("cost"),
    ]


def _totals(row: Any) -> Totals:
    return Totals(
        int(row.requests), int(row.prompt_tokens), int(row.completion_tokens), float(row.cost)
    )


class SqlStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _insert(self, table: Any) -> Any:
        dialect = postgresql if self.db.dialect == "postgresql" else sqlite
        return dialect.insert(table).on_conflict_do_nothing()

    # -- the usage ledger ---------------------------------------------------------------

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        values = [row.to_row() for row in rows]

        async def write(conn: AsyncConnection) -> None:
            await conn.execute(self._insert(usage), values)

        await self.db.run(write, write=True)

    def _range(self, query: Select[Any], user: str | None, first: str, last: str) -> Any:
        query = query.where(usage.c.day >= first, usage.c.day <= last)
        return query if user is None else query.where(usage.c.user_id == user)

    async def usage_by_day(
        self, user: str | None, first: str, last: str
    ) -> list[tuple[str, str, Totals]]:
        """``(user, day, totals)`` for days with usage, by user then day."""
        query = self._range(
            select(usage.c.user_id, usage.c.day, *_sums()), user, first, last
        ).group_by(usage.c.user_id, usage.c.day)

        async def read(conn: AsyncConnection) -> list[tuple[str, str, Totals]]:
            result = await conn.execute(query.order_by(usage.c.user_id, usage.c.day))
            return [(row.user_id, row.day, _totals(row)) for row in result]

        return await self.db.run(read)

    async def usage_by_model(
        self, user: str | None, first: str, last: str
    ) -> list[tuple[str | None, Totals]]:
        query = self._range(select(usage.c.model, *_sums()), user, first, last).group_by(
            usage.c.model
        )

        async def read(conn: AsyncConnection) -> list[tuple[str | None, Totals]]:
            result = await conn.execute(query.order_by(usage.c.model))
            return [(row.model, _totals(row)) for row in result]

        return await self.db.run(read)

    async def spent(self, user: str, day: str, *, timeout_s: float | None = None) -> Totals:
        query = self._range(select(*_sums()), user, day, day)

        async def read(conn: AsyncConnection) -> Totals:
            return _totals((await conn.execute(query)).one())

        return await self.db.run(read, timeout_s=timeout_s)

    # -- room history -------------------------------------------------------------------

    async def add_room_messages(self, messages: Sequence[Message]) -> None:
        values = [
            {"id": m["id"], "room": m["room"], "ts": float(m["ts"]), "message": m} for m in messages
        ]

        async def write(conn: AsyncConnection) -> None:
            await conn.execute(self._insert(room_messages), values)

        await self.db.run(write, write=True)

    async def room_history(
        self, room: str, *, limit: int, since_ts: float, timeout_s: float | None = None
    ) -> list[Message]:
        """The last ``limit`` messages of ``room`` newer than ``since_ts``, oldest first."""
        query = (
            select(room_messages.c.message)
            .where(room_messages.c.room == room, room_messages.c.ts >= since_ts)
            .order_by(room_messages.c.ts.desc(), room_messages.c.seq.desc())  # nodes write late
            .limit(limit)
        )

        async def read(conn: AsyncConnection) -> list[Message]:
            return [row.message for row in await conn.execute(query)]

        found = await self.db.run(read, timeout_s=timeout_s)
        found.reverse()
        return found
