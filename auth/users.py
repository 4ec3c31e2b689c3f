"""Built-in accounts: a TOML file of user names and bcrypt hashes.

```toml
[users.alice]
password_hash = "$2b$12$..."
name = "Alice"          # optional display name
```
"""

from __future__ import annotations

import functools
import logging
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import bcrypt

BCRYPT_MAX_BYTES = 72
# No ":" — "guest:…" identities belong to the server.
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
DEFAULT_ROUNDS = 12

logger = logging.getLogger(__name__)


@functools.cache
def _dummy_hash() -> bytes:
    """Checked against when the user does not exist, so both answers take the same time."""
    return bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=DEFAULT_ROUNDS))


class UsersFileError(ValueError):
    """The users file cannot be read; the message names it."""


class PasswordTooLong(ValueError):
    """bcrypt reads only 72 bytes; longer passwords are refused, never truncated."""


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    password_hash: str
    name: str
    admin: bool = False  # ``admin = true`` in the users file: may read GET /usage


def hash_password(password: str, rounds: int = DEFAULT_ROUNDS) -> str:
    raw = password.encode()
    if len(raw) > BCRYPT_MAX_BYTES:
        raise PasswordTooLong(f"passwords are limited to {BCRYPT_MAX_BYTES} bytes")
    if not raw:
        raise ValueError("the password is empty")
    return bcrypt.hashpw(raw, bcrypt.gensalt(rounds=rounds)).decode()


def check_password(password: str, password_hash: str | None) -> bool:
    """Constant work whether or not the account exists; over-long passwords never match."""
    raw = password.encode()
    too_long = len(raw) > BCRYPT_MAX_BYTES
    candidate = raw[:BCRYPT_MAX_BYTES]
    stored = password_hash.encode() if password_hash else _dummy_hash()
    try:
        ok = bcrypt.checkpw(candidate, stored)
    except ValueError:
        ok = False
    return ok and password_hash is not None and not too_long


class UserStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Account]:
        try:
            data = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UsersFileError(f"cannot read the users file {self.path}: {exc}") from exc
        users = data.get("users", {})
        out: dict[str, Account] = {}
        for username, entry in users.items():
            if isinstance(entry, dict) and isinstance(entry.get("password_hash"), str):
                out[username] = Account(
                    username,
                    entry["password_hash"],
                    str(entry.get("name") or username),
                    admin=entry.get("admin") is True,
                )
        return out

    def authenticate(self, username: str, password: str) -> Account | None:
        try:
            account = self.load().get(username)
        except UsersFileError as exc:
            logger.error("%s", exc)
            account = None
        ok = check_password(password, account.password_hash if account else None)
        return account if ok else None

    def save(self, accounts: dict[str, Account]) -> None:
        lines = ["# Built-in accounts for POST /auth/token (bcrypt hashes).", ""]
        for username in sorted(accounts):
            account = accounts[username]
            lines.append(f"[users.{_toml_key(username)}]")
            lines.append(f"password_hash = {_toml_str(account.password_hash)}")
            lines.append(f"name = {_toml_str(account.name)}")
            if account.admin:
                lines.append("admin = true")
            lines.append("")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".users-", suffix=".toml")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def add(
        self, username: str, password: str, name: str | None = None, *, admin: bool = False
    ) -> None:
        if not USERNAME.match(username):
            raise ValueError("user names are 1-64 characters of A-Z a-z 0-9 _ . @ -")
        accounts = self.load()
        accounts[username] = Account(
            username, hash_password(password), name or username, admin=admin
        )
        self.save(accounts)

    def remove(self, username: str) -> bool:
        accounts = self.load()
        if accounts.pop(username, None) is None:
            return False
        self.save(accounts)
        return True


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_key(value: str) -> str:
    if value and all(ch.isalnum() or ch in "-_" for ch in value):
        return value
    return _toml_str(value)
