"""Redis's own account of a scenario: ``INFO commandstats`` read before and after it.

The run's Redis is shared by the targets of a run (one at a time), so only the delta around
one scenario belongs to its target.  Every command in a pipeline or a ``MULTI`` counts as
one call, as Redis counts it; the ``INFO`` that reads the second snapshot is taken out.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

# {command: (calls, usec)}
Stats = dict[str, tuple[int, int]]


class CommandStats:
    """One connection for every snapshot of a run, so a snapshot adds one ``INFO`` and
    nothing else (a new connection would add its ``HELLO`` and ``CLIENT SETINFO``)."""

    def __init__(self, url: str) -> None:
        self.client = aioredis.Redis.from_url(url, single_connection_client=True)

    async def snapshot(self) -> Stats:
        """Calls and CPU microseconds per command so far (``INFO commandstats``)."""
        info: dict[str, Any] = await self.client.info("commandstats")
        return parse_commandstats(info)

    async def close(self) -> None:
        await self.client.aclose()


def parse_commandstats(info: dict[str, Any]) -> Stats:
    """redis-py's parsed ``INFO commandstats`` (``cmdstat_<name>: {calls, usec, ...}``)."""
    stats: Stats = {}
    for key, value in info.items():
        if key.startswith("cmdstat_") and isinstance(value, dict):
            stats[key.removeprefix("cmdstat_")] = (int(value["calls"]), int(value["usec"]))
    return stats


def delta(before: Stats, after: Stats) -> Stats:
    """What ran in between, per command; the snapshot's own ``INFO`` excluded."""
    out: Stats = {}
    for name, (calls, usec) in after.items():
        calls0, usec0 = before.get(name, (0, 0))
        if name == "info":
            calls -= 1
        if calls - calls0 > 0:
            out[name] = (calls - calls0, usec - usec0)
    return dict(sorted(out.items(), key=lambda item: (-item[1][0], item[0])))


def summarise(ops: Stats, tokens: int) -> dict[str, Any]:
    """The result fields: calls per command, totals, and operations per relayed token."""
    total = sum(calls for calls, _usec in ops.values())
    return {
        "redis_ops": {name: calls for name, (calls, _usec) in ops.items()},
        "redis_usec": {name: usec for name, (_calls, usec) in ops.items()},
        "redis_ops_total": total,
        "redis_ops_per_token": total / tokens if tokens else None,
    }


def top(ops: dict[str, Any], n: int = 5) -> list[tuple[str, float]]:
    """The ``n`` commands with the most calls, most first."""
    numbers = [(name, float(v)) for name, v in ops.items() if isinstance(v, int | float)]
    return sorted(numbers, key=lambda item: (-item[1], item[0]))[:n]
