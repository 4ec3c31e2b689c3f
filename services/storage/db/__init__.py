"""The durable store (usage ledger, room history) on SQLAlchemy 2 async, with Alembic migrations."""
