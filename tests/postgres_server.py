"""A PostgreSQL for the tests: the machine's on 127.0.0.1:5432 if it answers, else our own.

Tests never share a database: ``fresh_database`` creates one with a random name and
drops it afterwards.  On a machine without a PostgreSQL server, ``initdb`` and
``pg_ctl`` (PostgreSQL 15 binaries) start a private one on a free port for the session;
with neither, tests that need PostgreSQL are skipped with that reason.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg

from bench.procs import free_port

SHARED_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_BIN = Path(os.environ.get("TEST_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))


def _answers(url: str) -> bool:
    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(url, timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await conn.close()
        return True

    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # its own event loop, whatever runs in this thread
        return pool.submit(asyncio.run, probe()).result()


@contextlib.contextmanager
def private_postgres() -> Iterator[str]:
    """Our own PostgreSQL cluster in a temporary directory, on a free port."""
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(f"no PostgreSQL binaries in {PG_BIN}")
    workdir = Path(tempfile.mkdtemp(prefix="llm-relay-pg-"))
    data = workdir / "data"
    port = free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: use its system account
        import pwd

        account = pwd.getpwnam("postgres")
        os.chown(workdir, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]

    def run(*args: object, check: bool = True) -> None:
        command = [*as_user, *(str(arg) for arg in args)]
        subprocess.run(command, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    run(PG_BIN / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(PG_BIN / "pg_ctl", "-D", data, "-o", options, "-w", "-t", "30", "start")
    try:
        run(PG_BIN / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "test")
        yield f"postgresql://postgres@127.0.0.1:{port}/test"
    finally:
        run(PG_BIN / "pg_ctl", "-D", data, "-m", "immediate", "stop", check=False)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def available_postgres() -> Iterator[str | None]:
    """The shared server if it answers, else a private one, else ``None``."""
    if _answers(SHARED_URL):
        yield SHARED_URL
        return
    try:
        with private_postgres() as url:
            yield url
    except (RuntimeError, OSError, subprocess.CalledProcessError):
        yield None


def with_database(url: str, name: str) -> str:
    base, _, _old = url.rpartition("/")
    return f"{base}/{name}"


@contextlib.asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on ``server_url``'s server; dropped on exit.  Yields its URL."""
    name = f"llm_relay_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server_url, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(server_url, name)
    finally:
        admin = await asyncpg.connect(server_url, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
