"""Bring the schema to the newest revision, one node at a time.

Nodes that start together serialise here: PostgreSQL through a session advisory lock,
SQLite through an exclusive lock on a file next to the database (and SQLite's own write
lock).  The first node migrates; the others wait, then find nothing left to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
ADVISORY_KEY = 0x6C6C6D72656C6179 & 0x7FFFFFFFFFFFFFFF  # "llmrelay"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@functools.cache
def head() -> str | None:
    """The newest revision in ``migrations/versions``."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


@contextlib.asynccontextmanager
async def _file_lock(path: Path, timeout_s: float) -> AsyncIterator[None]:
    """An exclusive ``flock`` on ``path``, waited for at most ``timeout_s``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if loop.time() > deadline:
                    raise TimeoutError(f"another process holds {path}") from None
                await asyncio.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def sqlite_path(engine: AsyncEngine) -> Path | None:
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database).resolve()


async def migrate(engine: AsyncEngine, *, timeout_s: float = 60.0) -> str | None:
    """Upgrade to head; return the revision before (``None``: a fresh database)."""
    return await asyncio.wait_for(_migrate(engine, timeout_s), timeout_s)


async def _migrate(engine: AsyncEngine, timeout_s: float) -> str | None:
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_KEY})
            await conn.commit()
            try:
                before = await conn.run_sync(_current)
                await conn.commit()
                if before != head():
                    await conn.run_sync(_upgrade)
                    await conn.commit()
                return before
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})
                await conn.commit()
    path = sqlite_path(engine)
    lock: contextlib.AbstractAsyncContextManager[Any] = (
        _file_lock(path.with_name(path.name + ".migrate-lock"), timeout_s)
        if path is not None
        else contextlib.nullcontext()
    )
    async with lock, engine.connect() as conn:
        before = await conn.run_sync(_current)
        await conn.commit()
        if before != head():
            await conn.run_sync(_upgrade)
            await conn.commit()
        return before
