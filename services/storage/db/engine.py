"""One async engine per app, and every call to it bounded in time.

``Database.run`` gives a call its own task and waits at most ``timeout_s`` for it: a
database that stops answering (a frozen server, a dropped network) costs the caller the
timeout, never more, even when the driver's own clean-up would hang.  A call that timed
out is left to finish or fail in the background (held, so it is not collected).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_URL = "sqlite+aiosqlite:///./relay.db"


class DatabaseUnavailable(Exception):
    """The database did not answer within its timeout, or refused the call."""


def parse_url(url: str) -> URL:
    """``DATABASE_URL``: SQLite (aiosqlite) or PostgreSQL (asyncpg); plain schemes accepted."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise ValueError("DATABASE_URL must be sqlite+aiosqlite:///… or postgresql+asyncpg://…")


def safe_url(url: str) -> str:
    """The URL for logs: never the password."""
    return parse_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(url: str, timeout_s: float) -> AsyncEngine:
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(
            parsed, connect_args={"timeout": timeout_s}, pool_pre_ping=False
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        parsed,
        pool_size=5,
        max_overflow=5,
        pool_timeout=timeout_s,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"timeout": timeout_s, "command_timeout": timeout_s},
    )


class Database:
    """The engine and the one way to call it: ``await db.run(fn, ...)`` with a deadline."""

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.engine = make_engine(url, timeout_s)
        self.dialect = self.engine.dialect.name  # "sqlite" | "postgresql"
        self._stragglers: set[asyncio.Task[Any]] = set()

    async def run(
        self,
        fn: Callable[[AsyncConnection], Awaitable[T]],
        *,
        timeout_s: float | None = None,
        write: bool = False,
    ) -> T:
        """Run ``fn`` in one transaction; ``DatabaseUnavailable`` past the timeout or on error."""

        async def call() -> T:
            async with self.engine.begin() if write else self.engine.connect() as conn:
                return await fn(conn)

        task = asyncio.ensure_future(call())
        limit = self.timeout_s if timeout_s is None else timeout_s
        try:
            done, _pending = await asyncio.wait({task}, timeout=limit)
        except asyncio.CancelledError:
            task.cancel()
            self._hold(task)
            raise
        if not done:
            task.cancel()
            self._hold(task)
            raise DatabaseUnavailable(f"the database did not answer within {limit:g} s")
        try:
            return task.result()
        except Exception as exc:
            raise DatabaseUnavailable(f"the database call failed: {type(exc).__name__}") from exc

    def _hold(self, task: asyncio.Task[Any]) -> None:
        self._stragglers.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._stragglers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.debug("a timed-out database call ended with %r", task.exception())

    async def ping(self, timeout_s: float = 1.0) -> bool:
        try:
            await self.run(lambda conn: conn.execute(text("SELECT 1")), timeout_s=timeout_s)
        except DatabaseUnavailable:
            return False
        return True

    async def aclose(self) -> None:
        for task in list(self._stragglers):
            task.cancel()
        if self._stragglers:
            await asyncio.wait(self._stragglers, timeout=1.0)
        try:
            await asyncio.wait_for(self.engine.dispose(), self.timeout_s)
        except (TimeoutError, Exception):
            logger.warning("closing the database connections did not finish cleanly")
