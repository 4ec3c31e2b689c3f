"""Fault 9: the login throttle counts failures only, per account and (5x) per address,
in memory and in Redis; an office behind one address is not locked out by its own
successful logins, and a guesser who rotates accounts is still stopped."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from auth.users import UserStore
from tests.harness import RunningServer, run_server

pytestmark = pytest.mark.chaos("9 login throttle")

PASSWORD = "correct horse battery staple"
LIMIT = 3


async def login(srv: RunningServer, user: str, password: str, address: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{srv.url}/auth/token",
            data={"username": user, "password": password},
            headers={"X-Forwarded-For": address},  # loopback is a trusted proxy
        ) as resp,
    ):
        return resp.status, resp.headers.get("Retry-After")


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_failures_only_per_account_and_per_address(
    store: str,
    settings_for: Callable[..., Any],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    users = tmp_path / "users.toml"
    for name in ("alice", "bob"):
        UserStore(users).add(name, PASSWORD)
    extra: dict[str, Any] = {}
    if store == "redis":
        url, _proc = request.getfixturevalue("private_redis")
        assert isinstance(_proc, subprocess.Popen)
        extra = {"redis_url": url, "redis_key_prefix": f"t{secrets.token_hex(4)}:"}
    settings = settings_for(users_file=users, login_rate_limit_per_minute=LIMIT, **extra)
    async with run_server(settings) as srv:
        office = "192.0.2.10"
        for _ in range(LIMIT + 2):  # successes never count
            status, _ = await login(srv, "bob", PASSWORD, office)
            assert status == 200, "lost: a successful login was throttled"
        for _ in range(LIMIT):
            assert (await login(srv, "alice", "wrong", office))[0] == 401
        status, retry_after = await login(srv, "alice", PASSWORD, "198.51.100.7")
        assert status == 429, "lost: the guessed account was not throttled from elsewhere"
        assert retry_after is not None, "lost: no Retry-After"
        assert int(retry_after) >= 1, retry_after
        assert (await login(srv, "bob", PASSWORD, office))[0] == 200, (
            "lost: one account's failures locked out its address"
        )
        guesser = "203.0.113.66"
        for i in range(5 * LIMIT):  # a different account each time
            assert (await login(srv, f"victim{i}", "wrong", guesser))[0] == 401
        status, retry_after = await login(srv, "someone-else", "wrong", guesser)
        assert status == 429, "lost: a guesser rotating accounts was not throttled"
        assert retry_after is not None
        assert (await login(srv, "bob", PASSWORD, office))[0] == 200
