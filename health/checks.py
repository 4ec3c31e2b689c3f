"""Readiness checks: small objects that say how one dependency is doing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class CheckResult:
    status: str  # "ok", "disabled", "simulator", "degraded", or what is wrong
    ready: bool  # does this status keep the server out of rotation?
    degraded: bool = False  # ready, but with a dependency down (reported, not fatal)


Check = Callable[[], Awaitable[CheckResult]]


def upstream_check(*, configured: Callable[[], bool], demo: bool) -> Check:
    async def check() -> CheckResult:
        if demo:
            return CheckResult("simulator", True)
        if configured():
            return CheckResult("ok", True)
        return CheckResult("missing_api_key", False)

    return check


def flag_check(name: str, is_set: Callable[[], bool]) -> Check:
    """Not ready while ``is_set()`` (e.g. the server is shutting down)."""

    async def check() -> CheckResult:
        return CheckResult(name, False) if is_set() else CheckResult("ok", True)

    return check


def redis_check(
    ping: Callable[[], Awaitable[Any]], relaying: Callable[[], bool], timeout_s: float = 1.0
) -> Check:
    """Redis down leaves the node ready (local clients keep working) but ``degraded``:
    cross-node delivery, shared rooms and history wait for it to come back."""

    async def check() -> CheckResult:
        try:
            await asyncio.wait_for(ping(), timeout_s)
        except Exception:
            return CheckResult("degraded", True, degraded=True)
        if not relaying():
            return CheckResult("degraded", True, degraded=True)
        return CheckResult("ok", True)

    return check


def database_check(healthy: Callable[[], Awaitable[bool]]) -> Check:
    """The durable store down leaves the node ready (chats never wait for it) but
    ``degraded``: ledger rows and room messages wait in memory until it answers."""

    async def check() -> CheckResult:
        if await healthy():
            return CheckResult("ok", True)
        return CheckResult("degraded", True, degraded=True)

    return check


async def disabled_check() -> CheckResult:
    return CheckResult("disabled", True)
