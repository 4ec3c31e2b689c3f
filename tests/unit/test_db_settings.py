"""DATABASE_URL: the two accepted backends, plain schemes mapped to the async drivers, no leaks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from server.settings import Settings
from services.storage.db.engine import parse_url, safe_url


def test_plain_schemes_get_the_async_drivers() -> None:
    assert parse_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert parse_url("postgresql://u:p@h/db").drivername == "postgresql+asyncpg"
    assert parse_url("postgres://u:p@h/db").drivername == "postgresql+asyncpg"
    assert parse_url("postgresql+asyncpg://u:p@h/db").drivername == "postgresql+asyncpg"


@pytest.mark.parametrize("url", ["mysql://u:p@h/db", "not a url", "redis://h:6379/0"])
def test_other_databases_are_refused_at_start_up(url: str) -> None:
    with pytest.raises(ValidationError, match="DATABASE_URL"):
        Settings(database_url=url)


def test_the_database_password_never_reaches_a_log() -> None:
    url = "postgresql+asyncpg://relay:s3cret-pw@db:5432/relay"
    assert "s3cret-pw" in Settings(database_url=url).secret_values()
    assert "s3cret-pw" not in safe_url(url)
    assert Settings().database_url == "sqlite+aiosqlite:///./relay.db"  # PROTOCOL.md §5
    assert Settings().budget_tokens_per_day == 0
    assert Settings().budget_cost_per_day == 0
