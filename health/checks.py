"""Readiness checks: small objects that say how one dependency is doing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CheckResult:
    status: str  # "ok", "disabled", "simulator", or what is wrong
    ready: bool  # does this status keep the server out of rotation?


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


async def disabled_check() -> CheckResult:
    return CheckResult("disabled", True)
