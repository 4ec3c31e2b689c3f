"""Cross-node messages that Redis did not take yet: retried in order, never a silent gap.

A room member on another node gets a stream's events only through Redis pub/sub.  When a
publish fails, the message waits here (and every later one behind it, so the order
holds) while one task retries with a short backoff.  Messages are kept up to
``max_age_s`` (and ``max_messages``); one that has to be given up is *lost for good*:
its stream — ``(room, request_id)`` — is then ended for the members on other nodes with
``error {code: "unavailable"}`` (published once Redis takes messages again), and its
later events are not sent to them, so they see what came, then one terminal event.
Local members are not affected: local delivery never waits for Redis.

It overrides nothing itself: ``RedisManager._publish`` (socketio_managers.py) hands it
the messages python-socketio 5.18.1's ``AsyncPubSubManager.emit`` publishes (dicts with
``method``, ``event``, ``data``, ``room``…, read from that version).  Issue 16, fault 6;
correctness, not measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

Publish = Callable[[dict[str, Any]], Awaitable[Any]]  # raises when Redis did not take it

LOST_MESSAGE = "Events of this stream could not reach this server; the stream ended here."


def stream_of(message: dict[str, Any]) -> tuple[str, str] | None:
    """``(room, request_id)`` of a room stream event, else ``None``."""
    if message.get("method") != "emit":
        return None
    data = message.get("data")
    payload = data[0] if isinstance(data, list) and len(data) == 1 else data
    if not isinstance(payload, dict):
        return None
    room, request_id = payload.get("room"), payload.get("request_id")
    if isinstance(room, str) and isinstance(request_id, str):
        return room, request_id
    return None


def lost_error(message: dict[str, Any], room: str, request_id: str) -> dict[str, Any]:
    """The terminal ``error`` for a lost stream, addressed as ``message`` was."""
    payload = {
        "request_id": request_id,
        "room": room,
        "code": "unavailable",
        "message": LOST_MESSAGE,
        "retryable": True,
    }
    return {**message, "event": "error", "data": [payload], "skip_sid": None, "callback": None}


class Outbox:
    def __init__(
        self,
        publish: Publish,
        *,
        max_age_s: float = 20.0,
        max_messages: int = 10_000,
        retry_s: float = 1.0,
    ) -> None:
        self._publish = publish
        self.max_age_s = max_age_s
        self.max_messages = max_messages
        self.retry_s = retry_s
        self._waiting: deque[tuple[float, dict[str, Any]]] = deque()
        self._lost: dict[tuple[str, str], dict[str, Any]] = {}  # stream -> its lost error
        self._ended: dict[tuple[str, str], float] = {}  # lost streams already ended
        self._task: asyncio.Task[None] | None = None
        self.given_up = 0  # messages lost for good (for tests and logs)

    def __len__(self) -> int:
        return len(self._waiting)

    @property
    def holding(self) -> bool:
        return bool(self._waiting) or bool(self._lost)

    def add(self, message: dict[str, Any]) -> None:
        """Queue ``message`` behind the others (its publish failed, or others wait)."""
        stream = stream_of(message)
        if stream is not None and (stream in self._lost or stream in self._ended):
            return  # after a gap: its lost error ends it for the other nodes instead
        self._waiting.append((time.monotonic(), message))
        self._expire()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())

    def ended(self, stream: tuple[str, str]) -> bool:
        """Whether a stream was ended for the other nodes (its events no longer go there)."""
        return stream in self._lost or stream in self._ended

    def _expire(self) -> None:
        now = time.monotonic()
        if len(self._ended) > 10_000:  # forget the oldest half: long over by now
            for stream in list(self._ended)[:5_000]:
                del self._ended[stream]
        while self._waiting and (
            len(self._waiting) > self.max_messages or now - self._waiting[0][0] > self.max_age_s
        ):
            _at, message = self._waiting.popleft()
            self._give_up(message)

    def _give_up(self, message: dict[str, Any]) -> None:
        self.given_up += 1
        stream = stream_of(message)
        if stream is None or stream in self._lost:
            return
        logger.warning("room %s: events of request %s lost between nodes", *stream)
        self._lost[stream] = lost_error(message, *stream)
        # its later messages would come after a gap: drop them, the error ends it
        self._waiting = deque(item for item in self._waiting if stream_of(item[1]) != stream)

    async def _drain(self) -> None:
        delay = 0.05
        while self._waiting or self._lost:
            self._expire()
            try:
                for stream, error in list(self._lost.items()):
                    await self._publish(error)
                    del self._lost[stream]
                    self._ended[stream] = time.monotonic()
                while self._waiting:
                    await self._publish(self._waiting[0][1])
                    self._waiting.popleft()
            except Exception:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_s)
                continue
            delay = 0.05

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
