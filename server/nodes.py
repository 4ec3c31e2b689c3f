"""What the nodes of one deployment share, built from settings: the stream log and the
node bus (in Redis when ``REDIS_URL`` is set, any node may resume; else in memory), the
watch on room streams running on other nodes, and the budget counters."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from events.core.orphans import RemoteStreams
from events.core.rooms import room_channel
from events.core.tails import TailRegistry
from events.transport.internals.socketio_managers import RedisManager
from events.transport.internals.socketio_server import RelayServer
from server.settings import Settings
from services.budget import BudgetLimits, Budgets
from services.ledger import Ledger
from services.storage.budget_counters import Counters, MemoryCounters, RedisCounters
from services.storage.bus import LocalBus, NodeBus, RedisBus, new_node_id
from services.storage.redis_client import Breaker, redis_client
from services.storage.redis_streamlog import RedisStreamLog
from services.storage.streamlog import MemoryStreamLog, StreamLog

__all__ = ["build_budgets", "resume_parts", "watch_remote_streams"]


def resume_parts(
    settings: Settings, redis: aioredis.Redis | None, breaker: Breaker | None = None
) -> tuple[StreamLog, NodeBus]:
    """The stream log and the node bus: in memory, or in Redis (any node may resume)."""
    if redis is None or settings.redis_url is None:
        return MemoryStreamLog(retention_s=settings.resume_retention_s), LocalBus()
    node_id = new_node_id()
    block_s = 5.0
    # XREAD BLOCK waits up to block_s for news: its client's reads may take that long
    blocking = redis_client(
        settings.redis_url,
        timeout_s=settings.redis_timeout_s,
        breaker=breaker,
        socket_timeout=block_s + settings.redis_timeout_s,
    )
    log = RedisStreamLog(
        redis,
        blocking=blocking,
        block_s=block_s,
        op_timeout_s=settings.redis_timeout_s,
        lease_s=settings.node_lease_s,
        flush_s=settings.stream_log_flush_ms / 1000,
        lazy=settings.stream_log_lazy,
        prefix=settings.redis_key_prefix,
        node_id=node_id,
        retention_s=settings.resume_retention_s,
        # a safety net only (refreshed while the stream writes): longer than any pause
        live_ttl_s=settings.upstream_total_timeout_s + settings.resume_grace_s + 600,
    )
    bus = RedisBus(redis, prefix=settings.redis_key_prefix, node_id=node_id)

    async def ask_node(node: str, key: str) -> bool:
        return await bus.send(node, "materialize", key)

    log.ask_node = ask_node
    return log, bus


def watch_remote_streams(
    sio: RelayServer, manager: RedisManager, log: RedisStreamLog, tails: TailRegistry
) -> RemoteStreams:
    """Invariant 6 for room members here of streams running on a node that dies."""

    async def emit_here(event: str, payload: dict[str, Any], room: str) -> None:
        skip = tails.skip(event, payload, None)  # a member fed from the log gets it there
        await sio.emit(event, payload, room=room_channel(room), skip_sid=skip, ignore_queue=True)

    orphans = RemoteStreams(log, emit_here)
    manager.remote_events = orphans.seen
    return orphans


def build_budgets(settings: Settings, redis: aioredis.Redis | None, ledger: Ledger) -> Budgets:
    """Daily budgets: counters shared in Redis when nodes share one, seeded from the ledger."""
    counters: Counters = (
        RedisCounters(redis, prefix=settings.redis_key_prefix, timeout_s=settings.redis_timeout_s)
        if redis is not None
        else MemoryCounters()
    )
    defaults = BudgetLimits(
        settings.budget_tokens_per_day or None, settings.budget_cost_per_day or None
    )
    return Budgets(defaults, counters, ledger=ledger.spent)
