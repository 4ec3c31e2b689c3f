"""``python -m server``: serve (the default), ``users add|remove|list``, ``token``, ``health``."""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from server.settings import Settings

_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - probed on loopback

if TYPE_CHECKING:
    from auth.users import UserStore

_TTL = re.compile(r"^(\d+)\s*([smhd]?)$")


def parse_ttl(text: str) -> int:
    match = _TTL.match(text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError("use seconds or a number with s, m, h or d (e.g. 1h)")
    value, unit = int(match.group(1)), match.group(2) or "s"
    return value * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    parser.add_argument("--demo", action="store_true", help="anonymous access + local simulator")
    parser.add_argument("--host", help="bind address (HOST)")
    parser.add_argument("--port", type=int, help="port (PORT)")
    parser.add_argument("--log-level", help="LOG_LEVEL")
    parser.add_argument("--log-format", choices=["text", "json"], help="LOG_FORMAT")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the server (default)")
    sub.add_parser("migrate", help="bring DATABASE_URL's schema to the newest revision, then exit")
    users = sub.add_parser("users", help="manage built-in accounts (USERS_FILE)")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    add = users_sub.add_parser("add", help="add or update a user (password prompted or on stdin)")
    add.add_argument("name")
    add.add_argument("--display-name")
    add.add_argument("--admin", action="store_true", help="may read GET /usage")
    remove = users_sub.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    users_sub.add_parser("list", help="list users")
    token = sub.add_parser(
        "token",
        help="mint an HS256 token for scripts (needs JWT_SECRET), or --guest: ask a running "
        "server (demo mode) for a guest token",
    )
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--sub")
    who.add_argument(
        "--guest",
        action="store_true",
        help="POST /auth/guest of the server at HOST:PORT (e.g. `make run`) and print its token",
    )
    token.add_argument("--name")
    token.add_argument("--ttl", type=parse_ttl, default=3600, help="e.g. 3600, 30m, 1h, 7d")
    health = sub.add_parser("health", help="probe GET /health of a local server (exit 0 if ok)")
    health.add_argument("--timeout", type=float, default=3.0)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.demo:
        overrides["demo"] = True
    for name in ("host", "port", "log_level", "log_format"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def read_password(prompt: str = "Password: ") -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if getpass.getpass("Repeat: ") != first:
            raise SystemExit("passwords do not match")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def run_users(args: argparse.Namespace, settings: Settings) -> int:
    from auth.users import UsersFileError, UserStore

    store = UserStore(settings.users_file)
    try:
        return _users_command(args, store, settings)
    except UsersFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _users_command(args: argparse.Namespace, store: UserStore, settings: Settings) -> int:
    from auth.users import PasswordTooLong

    if args.users_command == "add":
        password = read_password()
        try:
            store.add(args.name, password, args.display_name, admin=args.admin)
        except (PasswordTooLong, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"user {args.name!r} saved in {settings.users_file}")
    elif args.users_command == "remove":
        if not store.remove(args.name):
            print(f"error: no user {args.name!r}", file=sys.stderr)
            return 1
        print(f"user {args.name!r} removed")
    else:
        for account in sorted(store.load().values(), key=lambda a: a.username):
            print(f"{account.username}\t{account.name}")
    return 0


def local_url(settings: Settings, path: str) -> str:
    host = "127.0.0.1" if settings.host in _WILDCARD_HOSTS else settings.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}{path}"


def run_guest_token(settings: Settings) -> int:
    """A guest token from a running server: demo mode has no JWT_SECRET to mint with."""
    import json
    import urllib.error
    import urllib.request

    url = local_url(settings, "/auth/guest")
    request = urllib.request.Request(url, method="POST")  # noqa: S310 - http(s) URL we built
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            print(json.load(resp)["access_token"])
    except urllib.error.HTTPError as exc:
        reason = "guest access is off (start with --demo or ALLOW_ANONYMOUS=true)"
        print(f"error: {url}: {reason if exc.code == 404 else exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError) as exc:
        print(
            f"error: {url}: no server answered ({exc}); start one with `make run`", file=sys.stderr
        )
        return 1
    return 0


def run_token(args: argparse.Namespace, settings: Settings) -> int:
    from server.security import ConfigError, build_verifier

    if args.guest:
        return run_guest_token(settings)
    if settings.jwt_secret is None:
        print("error: minting tokens needs JWT_SECRET", file=sys.stderr)
        return 2
    try:
        verifier = build_verifier(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not verifier.can_issue:
        print("error: JWT_ALGORITHMS does not allow HS256, the tokens this mints", file=sys.stderr)
        return 2
    print(verifier.issue(args.sub, name=args.name, ttl_s=args.ttl))
    return 0


def run_health(args: argparse.Namespace, settings: Settings) -> int:
    """The container's HEALTHCHECK: the slim image has no curl."""
    import urllib.error
    import urllib.request

    url = local_url(settings, "/health")
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:  # noqa: S310 - http URL we built
            ok = resp.status == 200
    except (OSError, urllib.error.URLError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


def run_migrate(settings: Settings) -> int:
    import asyncio

    from services.storage.db.engine import Database, safe_url
    from services.storage.db.migrate import head, migrate

    async def go() -> str | None:
        db = Database(settings.database_url, timeout_s=settings.database_timeout_s)
        try:
            return await migrate(db.engine)
        finally:
            await db.aclose()

    try:
        before = asyncio.run(go())
    except Exception as exc:
        print(f"error: migrating {safe_url(settings.database_url)} failed: {exc}", file=sys.stderr)
        return 1
    print(f"{safe_url(settings.database_url)}: revision {before or '(empty)'} -> {head()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from pydantic import ValidationError

    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]).upper() or "settings"
            print(f"configuration error: {field}: {error['msg']}", file=sys.stderr)
        return 2
    if args.command == "users":
        return run_users(args, settings)
    if args.command == "token":
        return run_token(args, settings)
    if args.command == "health":
        return run_health(args, settings)
    if args.command == "migrate":
        return run_migrate(settings)
    from server.serve import serve

    return serve(settings)
