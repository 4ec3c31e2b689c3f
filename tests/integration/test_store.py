"""The durable store against real SQLite and real PostgreSQL: migrations, ledger, history."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from services.ledger import Ledger
from services.storage.db.engine import Database, DatabaseUnavailable
from services.storage.db.migrate import head, migrate
from services.storage.db.store import SqlStore, UsageRow
from services.storage.db.writer import BatchWriter
from tests.postgres_server import fresh_database
from tests.tcp_proxy import tcp_proxy


def row(n: int, *, user: str = "alice", day: str = "2026-12-04", **kw: Any) -> UsageRow:
    values: dict[str, Any] = {
        "id": f"u_{user}_{day}_{n}",
        "user_id": user,
        "day": day,
        "model": "m/one",
        "request_id": f"req_{n}",
        "generation_id": f"gen-{n}",
        "room": None,
        "transport": "socketio",
        "outcome": "done",
        "finish_reason": "stop",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cached_tokens": 2,
        "reasoning_tokens": None,
        "cost": 0.0015,
        "usage_reported": True,
        "accepted_at": 1.0,
        "finished_at": 2.0,
    }
    values.update(kw)
    return UsageRow(**values)


async def migrated(url: str) -> Database:
    db = Database(url, timeout_s=5)
    await migrate(db.engine)
    return db


async def test_two_processes_migrate_the_same_database_at_once(database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "warning"}

    async def run() -> tuple[int, bytes]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server",
            "migrate",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out

    results = await asyncio.wait_for(asyncio.gather(run(), run(), run()), 60)
    assert [code for code, _ in results] == [0, 0, 0], [out for _, out in results]
    outputs = b"".join(out for _, out in results).decode()
    assert outputs.count("(empty) -> 0001") == 1  # exactly one of them created the schema
    db = Database(database_url)
    try:
        versions = await db.run(
            lambda c: c.execute(text("SELECT version_num FROM alembic_version"))
        )
        assert [r[0] for r in versions] == [head()]
        assert head() == "0001"
    finally:
        await db.aclose()


async def test_usage_rows_sum_per_day_and_model_and_a_retried_write_counts_once(
    database_url: str,
) -> None:
    db = await migrated(database_url)
    store = SqlStore(db)
    try:
        rows = [row(1), row(2, model="m/two", cost=0.5), row(3, day="2026-12-03")]
        await store.add_usage(rows)
        await store.add_usage(rows[:2])  # a retry after a write that had committed
        await store.add_usage([row(1, user="bob")])
        by_day = await store.usage_by_day("alice", "2026-11-05", "2026-12-04")
        assert [(u, d, t.requests, t.prompt_tokens, t.completion_tokens) for u, d, t in by_day] == [
            ("alice", "2026-12-03", 1, 10, 5),
            ("alice", "2026-12-04", 2, 20, 10),
        ]
        assert by_day[1][2].cost == pytest.approx(0.5015)
        everyone = await store.usage_by_day(None, "2026-12-04", "2026-12-04")
        assert [(u, t.requests) for u, _d, t in everyone] == [("alice", 2), ("bob", 1)]
        models = await store.usage_by_model("alice", "2026-12-01", "2026-12-31")
        assert [(m, t.requests) for m, t in models] == [("m/one", 2), ("m/two", 1)]
        spent = await store.spent("alice", "2026-12-04")
        assert (spent.tokens, round(spent.cost, 6)) == (30, 0.5015)
        long_model = row(9, model="x" * 500, generation_id="g" * 500)
        await store.add_usage([long_model])  # clipped, never a failed write
    finally:
        await db.aclose()


async def test_room_history_keeps_order_limit_and_age(database_url: str) -> None:
    db = await migrated(database_url)
    store = SqlStore(db)
    try:
        now = time.time()
        messages = [
            {
                "room": "lobby",
                "id": f"msg_{i}",
                "user": {"id": "alice", "name": "Alice"},
                "role": "user",
                "content": f"hello {i} — ünïcode",
                "ts": now - 100 + i,
            }
            for i in range(10)
        ]
        await store.add_room_messages(messages[:6])
        await store.add_room_messages(messages[4:])  # overlap: written once
        await store.add_room_messages([{**messages[0], "id": "other", "room": "elsewhere"}])
        history = await store.room_history("lobby", limit=4, since_ts=0)
        assert history == messages[6:]
        recent = await store.room_history("lobby", limit=50, since_ts=now - 93)
        assert [m["id"] for m in recent] == ["msg_7", "msg_8", "msg_9"]
    finally:
        await db.aclose()


async def test_a_frozen_database_costs_a_call_its_timeout_and_nothing_is_lost(
    postgres_server_url: str,
) -> None:
    """PostgreSQL behind a TCP proxy that is SIGSTOPped: writes wait in memory, then land."""
    async with fresh_database(postgres_server_url) as plain_url:
        url = make_url(plain_url)
        with tcp_proxy(url.host or "127.0.0.1", url.port or 5432) as (port, proxy):
            proxied = url.set(drivername="postgresql+asyncpg", port=port)
            ledger = Ledger(proxied.render_as_string(hide_password=False), timeout_s=0.5)
            await ledger.start()
            await ledger.wait_ready()
            try:
                ledger.record(row(0))
                assert await ledger.usage.flushed(5)
                proxy.send_signal(signal.SIGSTOP)
                try:
                    started = time.monotonic()
                    for n in range(1, 201):
                        ledger.record(row(n))  # never waits
                    assert time.monotonic() - started < 0.1
                    started = time.monotonic()
                    with pytest.raises(DatabaseUnavailable):
                        await ledger.usage_by_day("alice", "2026-12-01", "2026-12-31")
                    assert time.monotonic() - started < 2
                    await asyncio.sleep(1.5)  # a few write attempts time out meanwhile
                    assert ledger.usage.failing
                    assert ledger.usage.unwritten > 0  # waiting, or in the attempt now
                finally:
                    proxy.send_signal(signal.SIGCONT)
                assert await ledger.usage.flushed(30)
                by_day = await ledger.usage_by_day("alice", "2026-12-04", "2026-12-04")
                assert by_day[0][2].requests == 201
                assert ledger.usage.dropped == 0
            finally:
                await ledger.aclose()


async def test_the_writer_bounds_memory_and_says_what_it_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    written: list[int] = []
    gate = asyncio.Event()

    async def write(batch: Any) -> None:
        await gate.wait()
        written.extend(batch)

    writer: BatchWriter[int] = BatchWriter("test", write, max_pending=10, batch_size=5)
    writer.start()
    for n in range(5):
        writer.put(n)
    await asyncio.sleep(0.1)  # the first batch is in flight
    for n in range(5, 20):
        writer.put(n)
    assert writer.pending == 10
    assert writer.dropped == 5
    assert "dropped 1 so far" in caplog.text
    gate.set()
    assert await writer.flushed(5)
    await writer.aclose()
    assert written == [0, 1, 2, 3, 4, *range(10, 20)]
