"""Built-in accounts: bcrypt hashes in a TOML file (auth/users.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from auth.users import (
    BCRYPT_MAX_BYTES,
    PasswordTooLong,
    UsersFileError,
    UserStore,
    check_password,
    hash_password,
)


def test_hash_and_check() -> None:
    hashed = hash_password("secret words", rounds=4)
    assert hashed.startswith("$2b$04$")
    assert check_password("secret words", hashed)
    assert not check_password("secret word", hashed)
    assert not check_password("secret words", None)


def test_72_byte_limit_is_explicit() -> None:
    assert check_password("a" * 72, hash_password("a" * 72, rounds=4))
    with pytest.raises(PasswordTooLong):
        hash_password("a" * 73, rounds=4)
    with pytest.raises(PasswordTooLong):
        hash_password("ü" * 37, rounds=4)  # 74 bytes in UTF-8
    # bcrypt itself would ignore everything after byte 72: we do not
    assert not check_password("a" * 72 + "b", hash_password("a" * 72, rounds=4))
    assert BCRYPT_MAX_BYTES == 72


def test_empty_password_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_password("")


def test_unknown_user_costs_a_bcrypt_check_too() -> None:
    # An unknown user is checked against a dummy hash of the default cost, so the
    # answer takes as long as a wrong password would (no user enumeration by timing).
    check_password("warm-up", None)
    started = time.perf_counter()
    assert not check_password("guess", None)
    assert time.perf_counter() - started > 0.02  # cost 12 takes ~0.2 s; never ~0


def test_store_add_authenticate_remove(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "sub" / "users.toml")
    assert store.load() == {}
    store.add("alice", "pw-alice", "Alice Liddell")
    store.add("bob.b@example", "pw-bob")
    accounts = store.load()
    assert sorted(accounts) == ["alice", "bob.b@example"]
    assert accounts["alice"].name == "Alice Liddell"
    assert accounts["bob.b@example"].name == "bob.b@example"
    assert store.authenticate("alice", "pw-alice") == accounts["alice"]
    assert store.authenticate("alice", "pw-bob") is None
    assert store.authenticate("carol", "pw-alice") is None
    assert (tmp_path / "sub" / "users.toml").stat().st_mode & 0o777 == 0o600
    assert store.remove("alice")
    assert not store.remove("alice")
    assert sorted(store.load()) == ["bob.b@example"]


@pytest.mark.parametrize("name", ["", "guest:1", "has space", "x" * 65, 'q"uote', "a\nb"])
def test_bad_user_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="user names"):
        UserStore(tmp_path / "users.toml").add(name, "pw")


def test_a_broken_file_is_reported_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_text("[users.alice\npassword_hash = 1")
    store = UserStore(path)
    with pytest.raises(UsersFileError, match=r"users\.toml"):
        store.load()
    with pytest.raises(UsersFileError):
        store.add("bob", "pw")
    assert path.read_text().startswith("[users.alice")
    assert store.authenticate("alice", "pw") is None  # the server answers 401, logs why
