"""The tables of the durable store (SQLAlchemy Core; the migrations create them)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

metadata = MetaData()

usage = Table(
    "usage",
    metadata,
    Column("id", String(40), primary_key=True),  # made by the node: a retried write is a no-op
    Column("user_id", String(256), nullable=False),
    Column("day", String(10), nullable=False),  # UTC date of the end, YYYY-MM-DD
    Column("model", String(200)),
    Column("request_id", String(64), nullable=False),
    Column("generation_id", String(200)),
    Column("room", String(64)),
    Column("transport", String(16)),
    Column("outcome", String(16), nullable=False),
    Column("finish_reason", String(64)),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("cached_tokens", Integer),
    Column("reasoning_tokens", Integer),
    Column("cost", Float, nullable=False, default=0.0),
    Column("usage_reported", Integer, nullable=False, default=1),  # 0: tokens are relayed deltas
    Column("accepted_at", Float, nullable=False),  # epoch seconds
    Column("finished_at", Float, nullable=False),
    Index("ix_usage_user_day", "user_id", "day"),
    Index("ix_usage_day", "day"),
)

room_messages = Table(
    "room_messages",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("id", String(64), nullable=False, unique=True),  # the message id: writes are idempotent
    Column("room", String(64), nullable=False),
    Column("ts", Float, nullable=False),
    Column("message", JSON, nullable=False),  # the ``message`` event's payload
    Index("ix_room_messages_room_ts", "room", "ts"),
)

# Every stored text is bounded: a long room name or model never fails a write.
LIMITS = {"model": 200, "generation_id": 200, "finish_reason": 64, "user_id": 256}


def clip(value: str | None, limit: int) -> str | None:
    return value if value is None or len(value) <= limit else value[:limit]
