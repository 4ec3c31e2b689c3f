"""The usage ledger and durable room history.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("generation_id", sa.String(200)),
        sa.Column("room", sa.String(64)),
        sa.Column("transport", sa.String(16)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("finish_reason", sa.String(64)),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("cached_tokens", sa.Integer),
        sa.Column("reasoning_tokens", sa.Integer),
        sa.Column("cost", sa.Float, nullable=False),
        sa.Column("usage_reported", sa.Integer, nullable=False),
        sa.Column("accepted_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=False),
    )
    op.create_index("ix_usage_user_day", "usage", ["user_id", "day"])
    op.create_index("ix_usage_day", "usage", ["day"])
    op.create_table(
        "room_messages",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("room", sa.String(64), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("message", sa.JSON, nullable=False),
    )
    op.create_index("ix_room_messages_room_ts", "room_messages", ["room", "ts"])


def downgrade() -> None:
    op.drop_table("room_messages")
    op.drop_table("usage")
