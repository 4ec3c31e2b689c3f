"""Built-in accounts marked admin (``admin = true`` in USERS_FILE, ``users add --admin``)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from auth.tokens import TokenVerifier
from auth.users import Account, UserStore, hash_password
from server.cli import main


async def test_an_admin_flag_round_trips_and_tokens_carry_roles(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.toml")
    store.save(
        {
            "root": Account("root", hash_password("pw-root-123", rounds=4), "Root", admin=True),
            "ann": Account("ann", hash_password("pw-ann-1234", rounds=4), "Ann"),
        }
    )
    loaded = store.load()
    assert (loaded["root"].admin, loaded["ann"].admin) == (True, False)
    assert "admin = true" in (tmp_path / "users.toml").read_text()
    secret = "x" * 40
    verifier = TokenVerifier(secret=secret)
    identity = await verifier.verify(verifier.issue("root", roles=("admin",)))
    assert identity.is_admin
    assert identity.roles == frozenset({"admin"})
    plain = await verifier.verify(verifier.issue("ann"))
    assert not plain.is_admin
    assert "roles" not in plain.claims


def test_users_add_admin_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "users.toml"
    monkeypatch.setenv("USERS_FILE", str(path))
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert main(["users", "add", "ops", "--admin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("another-password\n"))
    assert main(["users", "add", "dev"]) == 0
    accounts = UserStore(path).load()
    assert (accounts["ops"].admin, accounts["dev"].admin) == (True, False)
