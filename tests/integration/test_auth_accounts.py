"""Built-in accounts: the ``users`` and ``token`` CLI commands, ``POST /auth/token``,
``POST /auth/guest``, and start-up refusal without a way to verify tokens."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from auth.users import UserStore
from tests.harness import JWT_SECRET, Recorder, RunningServer, run_server
from tests.integration.auth_support import no_secrets_in_logs, remember

__all__ = ["no_secrets_in_logs"]

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


@dataclass
class Ran:
    code: int
    out: str
    err: str


async def cli(*args: str, env: dict[str, str], stdin: str = "", cwd: Path) -> Ran:
    """``python -m server …`` as an operator runs it (stdin not a terminal)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "OPENROUTER_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        *args,
        env={**clean, "PYTHONPATH": str(REPO), **env},
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


async def login(server: RunningServer, username: str, password: str, **headers: str) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{server.url}/auth/token",
            data={"username": username, "password": password},
            headers=headers,
        ) as resp,
    ):
        body = await resp.json()
        if resp.status == 200:
            remember(body["access_token"])
        return resp.status, body, resp.headers


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    return tmp_path / "users.toml"


@pytest.fixture
async def accounts_server(
    settings_for: Callable[..., Any], users_file: Path
) -> AsyncIterator[RunningServer]:
    settings = settings_for(users_file=users_file, token_ttl_s=900)
    async with run_server(settings) as running:
        yield running


async def test_cli_adds_a_user_who_can_log_in_and_removes_them(
    accounts_server: RunningServer, users_file: Path, tmp_path: Path
) -> None:
    env = {"USERS_FILE": str(users_file)}
    ran = await cli(
        "users",
        "add",
        "alice",
        "--display-name",
        "Alice",
        env=env,
        stdin=PASSWORD + "\n",
        cwd=tmp_path,
    )
    assert ran.code == 0, ran.err
    assert PASSWORD not in users_file.read_text()
    assert oct(users_file.stat().st_mode & 0o777) == "0o600"
    ran = await cli("users", "list", env=env, cwd=tmp_path)
    assert ran.out.split() == ["alice", "Alice"]

    status, body, _ = await login(accounts_server, "alice", PASSWORD)
    assert status == 200
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["name"] == "Alice"
    assert abs(claims["exp"] - time.time() - 900) < 30
    rec = Recorder()
    try:
        await rec.connect(accounts_server.url, body["access_token"])
        session = await rec.wait_event("session")
        assert session["user"] == {"id": "alice", "name": "Alice"}
    finally:
        await rec.close()

    ran = await cli("users", "remove", "alice", env=env, cwd=tmp_path)
    assert ran.code == 0, ran.err
    status, _, _ = await login(accounts_server, "alice", PASSWORD)
    assert status == 401
    ran = await cli("users", "remove", "alice", env=env, cwd=tmp_path)
    assert ran.code == 1
    assert "no user" in ran.err


async def test_wrong_password_and_unknown_user_get_the_same_answer(
    accounts_server: RunningServer, users_file: Path
) -> None:
    UserStore(users_file).add("bob", PASSWORD)
    wrong = await login(accounts_server, "bob", "not the password")
    unknown = await login(accounts_server, "nobody", "not the password")
    assert wrong[0] == unknown[0] == 401
    assert wrong[1] == unknown[1] == {"detail": "Wrong user name or password."}
    assert wrong[2].get("WWW-Authenticate") == unknown[2].get("WWW-Authenticate") == "Bearer"
    assert "not the password" not in str(wrong) + str(unknown)


async def test_bcrypt_72_byte_limit_is_explicit(
    accounts_server: RunningServer, users_file: Path, tmp_path: Path
) -> None:
    exactly_72 = "p" * 72
    UserStore(users_file).add("carol", exactly_72)
    assert (await login(accounts_server, "carol", exactly_72))[0] == 200
    # bcrypt would ignore byte 73; the server refuses instead of truncating
    assert (await login(accounts_server, "carol", exactly_72 + "x"))[0] == 401
    # and the CLI never sets such a password (multi-byte characters count as bytes)
    ran = await cli(
        "users",
        "add",
        "dave",
        env={"USERS_FILE": str(users_file)},
        stdin="é" * 37 + "\n",
        cwd=tmp_path,
    )
    assert ran.code == 2
    assert "72 bytes" in ran.err
    assert "dave" not in UserStore(users_file).load()


async def test_cli_refuses_bad_user_names_and_empty_passwords(
    users_file: Path, tmp_path: Path
) -> None:
    env = {"USERS_FILE": str(users_file)}
    for name, password in [("guest:x", PASSWORD), ("a b", PASSWORD), ("erin", "")]:
        ran = await cli("users", "add", name, env=env, stdin=password + "\n", cwd=tmp_path)
        assert ran.code == 2, (name, ran)
    assert not users_file.exists()


async def test_cli_mints_a_token_for_scripts(server: RunningServer, tmp_path: Path) -> None:
    ran = await cli(
        "token", "--sub", "script-bot", "--ttl", "1h", env={"JWT_SECRET": JWT_SECRET}, cwd=tmp_path
    )
    assert ran.code == 0, ran.err
    token = remember(ran.out.strip())
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "script-bot"
    assert abs(claims["exp"] - time.time() - 3600) < 30
    rec = Recorder()
    try:
        await rec.connect(server.url, token)
        assert (await rec.wait_event("session"))["user"]["id"] == "script-bot"
    finally:
        await rec.close()
    ran = await cli("token", "--sub", "x", env={}, cwd=tmp_path)
    assert ran.code == 2
    assert "JWT_SECRET" in ran.err


async def test_failed_logins_are_limited_per_account_and_client_address(
    settings_for: Callable[..., Any], users_file: Path
) -> None:
    UserStore(users_file).add("frank", PASSWORD)
    UserStore(users_file).add("grace", PASSWORD)
    settings = settings_for(users_file=users_file, login_rate_limit_per_minute=3)
    async with run_server(settings) as server:
        for _ in range(3):
            assert (await login(server, "frank", "guess"))[0] == 401
        status, _body, headers = await login(server, "frank", PASSWORD)
        assert status == 429
        assert int(headers["Retry-After"]) >= 1
        # the account is throttled from any address (loopback is a trusted proxy)
        elsewhere = {"X-Forwarded-For": "203.0.113.9"}
        assert (await login(server, "frank", PASSWORD, **elsewhere))[0] == 429
        # another account from the same address is not
        assert (await login(server, "grace", PASSWORD))[0] == 200
    untrusting = settings_for(
        users_file=users_file, login_rate_limit_per_minute=3, trusted_proxies="10.1.2.3"
    )
    async with run_server(untrusting) as server:
        for i in range(15):  # 5x the limit, each on another account, "from" other addresses
            spoofed = {"X-Forwarded-For": f"198.51.100.{i}"}
            assert (await login(server, f"user{i}", "guess", **spoofed))[0] == 401
        # a client cannot pick a fresh address with a header: it is still throttled
        spoofed = {"X-Forwarded-For": "198.51.100.200"}
        assert (await login(server, "grace", PASSWORD, **spoofed))[0] == 429


async def test_guest_tokens_only_in_anonymous_mode(
    server: RunningServer, settings_for: Callable[..., Any]
) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{server.url}/auth/guest") as resp:
        assert resp.status == 404
    async with run_server(settings_for(jwt_secret=None, allow_anonymous=True)) as anon:
        async with aiohttp.ClientSession() as http, http.post(f"{anon.url}/auth/guest") as resp:
            assert resp.status == 200
            token = remember((await resp.json())["access_token"])
        rec = Recorder()
        try:
            await rec.connect(anon.url, token)
            user = (await rec.wait_event("session"))["user"]
            assert user["id"].startswith("guest:")
            assert user["name"].startswith("Guest ")
        finally:
            await rec.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, "No way to verify tokens", id="no-key"),
        pytest.param({"JWT_SECRET": "tiny-secret-4"}, "JWT_SECRET is too short", id="short-secret"),
        pytest.param(
            {"JWT_SECRET": JWT_SECRET, "JWT_ALGORITHMS": "HS256,none"},
            "must never contain 'none'",
            id="alg-none",
        ),
        pytest.param(
            {"JWT_JWKS_URL": "http://127.0.0.1:9/jwks.json"},
            "names no asymmetric algorithm",
            id="jwks-with-hs256",
        ),
        pytest.param(
            {"JWT_PUBLIC_KEY": "/nonexistent/key.pem", "JWT_ALGORITHMS": "RS256"},
            "JWT_PUBLIC_KEY is neither a PEM block nor a readable PEM file",
            id="bad-public-key",
        ),
    ],
)
async def test_server_refuses_to_start_without_a_way_to_verify_tokens(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    ran = await cli("serve", env={"PORT": "0", **env}, cwd=tmp_path)
    assert ran.code == 2
    assert expected in ran.err
    assert "Traceback" not in ran.err


async def test_uvicorn_entry_point_refuses_the_same_way(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "OPENROUTER_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "server.main:app",
        "--port",
        "0",
        env={**clean, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0
    assert "configuration error: No way to verify tokens" in err.decode()
    assert "Traceback" not in err.decode()


def test_users_add_prompts_twice_without_echo_on_a_terminal(tmp_path: Path) -> None:
    import pty
    import select
    import subprocess

    users = tmp_path / "users.toml"
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "users", "add", "grace"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env={**os.environ, "PYTHONPATH": str(REPO), "USERS_FILE": str(users)},
        cwd=tmp_path,
        start_new_session=True,  # the pty becomes its controlling terminal (/dev/tty)
    )
    os.close(secondary)
    seen = b""

    def read_until(marker: bytes) -> None:
        nonlocal seen
        deadline = time.monotonic() + 30
        while marker not in seen:
            assert time.monotonic() < deadline, seen
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(primary, 1024)
                except OSError:  # the child closed the terminal
                    break

    try:
        read_until(b"Password:")
        os.write(primary, PASSWORD.encode() + b"\n")
        read_until(b"Repeat:")
        os.write(primary, PASSWORD.encode() + b"\n")
        read_until(b"saved")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(primary)
    assert PASSWORD.encode() not in seen  # not echoed
    assert UserStore(users).authenticate("grace", PASSWORD) is not None
