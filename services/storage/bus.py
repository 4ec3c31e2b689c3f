"""The node command bus: a command for a generation reaches the node that runs it.

A generation runs on the node its client first talked to; the client may come back
on another node (behind a load balancer) and ``cancel`` or ``resume`` it there.  The
stream log's meta names the node; ``send(node, command, key)`` delivers the command
there and returns what that node's handler answered (``False`` when no node
answered in time).  Commands: ``cancel`` and ``disconnect`` stop the generation,
``attach`` stops its grace timer (someone resumed it), ``detach`` starts it again,
``materialize`` writes a lazily kept stream to the log (a reader wants it).

``LocalBus`` serves one process; ``RedisBus`` uses Redis pub/sub, one channel per
node, JSON messages (never pickle).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

CommandHandler = Callable[[str, str], Awaitable[bool]]  # (command, key) -> handled?
COMMANDS = frozenset({"cancel", "disconnect", "attach", "detach", "materialize"})
REPLY_TIMEOUT_S = 2.0


def new_node_id() -> str:
    return "node_" + secrets.token_hex(6)


class NodeBus(Protocol):
    node_id: str

    async def start(self, handler: CommandHandler) -> None: ...
    async def send(self, node: str, command: str, key: str, *, wait_s: float = 2.0) -> bool: ...
    async def aclose(self) -> None: ...


class LocalBus:
    """One process: the only node is this one."""

    def __init__(self, node_id: str | None = None) -> None:
        self.node_id = node_id or new_node_id()
        self._handler: CommandHandler | None = None

    async def start(self, handler: CommandHandler) -> None:
        self._handler = handler

    async def send(self, node: str, command: str, key: str, *, wait_s: float = 2.0) -> bool:
        if node != self.node_id or self._handler is None or command not in COMMANDS:
            return False
        return await self._handler(command, key)

    async def aclose(self) -> None:
        self._handler = None


class RedisBus:
    """Redis pub/sub: node ``n`` listens on ``<prefix>bus:<n>``; replies come back the same way."""

    def __init__(self, redis: aioredis.Redis, *, prefix: str, node_id: str | None = None) -> None:
        self.node_id = node_id or new_node_id()
        self._redis = redis
        self._prefix = prefix
        self._handler: CommandHandler | None = None
        self._subscribed = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[bool]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _channel(self, node: str) -> str:
        return f"{self._prefix}bus:{node}"

    async def start(self, handler: CommandHandler) -> None:
        """Listen for commands; a Redis that is down now is retried, not fatal."""
        self._handler = handler
        self._listener = asyncio.create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 2.0)

    async def send(self, node: str, command: str, key: str, *, wait_s: float = 2.0) -> bool:
        if command not in COMMANDS:
            return False
        if node == self.node_id:
            return self._handler is not None and await self._handler(command, key)
        msg_id = next(self._ids)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = future
        message = {"op": command, "key": key, "id": msg_id, "from": self.node_id}
        try:
            async with asyncio.timeout(wait_s):
                receivers = await self._redis.publish(self._channel(node), orjson.dumps(message))
                if not receivers:
                    return False  # that node is gone
                return await future
        except (TimeoutError, RedisError, OSError):
            return False
        finally:
            self._waiting.pop(msg_id, None)

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel(self.node_id))
                self._subscribed.set()
                delay = 0.5
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._receive(message.get("data"))
            except (RedisError, OSError) as exc:
                logger.warning("node bus: no Redis (%s); retrying", type(exc).__name__)
            except Exception:
                logger.exception("node bus listener failed; restarting")
            finally:
                self._subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _receive(self, data: Any) -> None:
        try:
            message = orjson.loads(data)
        except (orjson.JSONDecodeError, TypeError):
            return
        if not isinstance(message, dict):
            return
        reply_to, ok = message.get("reply"), message.get("ok")
        if isinstance(reply_to, int) and isinstance(ok, bool):
            future = self._waiting.get(reply_to)
            if future is not None and not future.done():
                future.set_result(ok)
            return
        op, key = message.get("op"), message.get("key")
        msg_id, sender = message.get("id"), message.get("from")
        if (
            op in COMMANDS
            and isinstance(key, str)
            and isinstance(msg_id, int)
            and isinstance(sender, str)
        ):
            task = asyncio.create_task(self._handle(op, key, msg_id, sender))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, op: str, key: str, msg_id: int, sender: str) -> None:
        ok = False
        try:
            if self._handler is not None:
                ok = await self._handler(op, key)
        except Exception:
            logger.exception("node bus: command %s failed", op)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            reply = orjson.dumps({"reply": msg_id, "ok": ok})
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                await self._redis.publish(self._channel(sender), reply)

    async def aclose(self) -> None:
        self._handler = None
        tasks = [t for t in (self._listener, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1)
