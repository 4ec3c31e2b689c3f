"""Cross-node messages on their way to Redis: coalesced, retried in order, never a silent gap.

A room member on another node gets a stream's events only through Redis pub/sub.  Every
message this node publishes waits here, in order, and one task per node publishes them:

* **Coalesced** (issue 17).  The messages of a short window (``flush_s``,
  ``PUBSUB_FLUSH_MS``) go to Redis as one command; while one is in flight the next
  ones gather behind it.  The window never holds back what a reader waits for: a
  stream's first event (``seq`` 0), a terminal event (``done``/``error``) and anything
  that is not a stream event (room messages, presence, python-socketio's own
  ``enter_room``/``disconnect``/``callback`` messages) flush at once, taking what waits
  before them along.  ``flush_s = 0``: no window; what gathered behind a publish in
  flight still goes in the next one.
* **Retried in order** (issue 16, fault 6).  When a publish fails, its batch stays at the
  head (and every later message behind it, so the order holds) while the task retries
  with a short backoff.  Messages are kept up to ``max_age_s`` past their window (and
  ``max_messages``); one that has to be given up is *lost for good*: its stream —
  ``(room, request_id)`` — is then ended for the members on other nodes with
  ``error {code: "unavailable"}`` (published once Redis takes messages again), and its
  later events are not sent to them, so they see what came, then one terminal event.
  Per stream: a batch that held several streams ends each of them so.  Local members
  are not affected: local delivery never waits.

It overrides nothing itself: ``RedisManager._publish`` (socketio_managers.py) hands it
the messages python-socketio 5.18.1's ``AsyncPubSubManager.emit`` publishes (dicts with
``method``, ``event``, ``data``, ``room``…, read from that version), each encoded once,
when it is added; ``publish`` gets the encoded messages of one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)

Message = dict[str, Any]
Publish = Callable[[list[bytes]], Awaitable[Any]]  # one Redis command; raises when not taken
Encode = Callable[[Message], bytes]
Stream = tuple[str, str]  # (room, request_id)

LOST_MESSAGE = "Events of this stream could not reach this server; the stream ended here."
TERMINAL = frozenset({"done", "error"})


def stream_of(message: Message) -> Stream | None:
    """``(room, request_id)`` of a room stream event, else ``None``."""
    if message.get("method") != "emit":
        return None
    payload = _payload(message)
    if not isinstance(payload, dict):
        return None
    room, request_id = payload.get("room"), payload.get("request_id")
    if isinstance(room, str) and isinstance(request_id, str):
        return room, request_id
    return None


def urgent(message: Message, stream: Stream | None) -> bool:
    """Whether ``message`` goes out at once: what a reader waits for, or not ours to hold."""
    if stream is None or message.get("event") in TERMINAL:
        return True
    seq = _payload(message).get("seq")
    return not isinstance(seq, int) or seq == 0  # a stream's first event


def _payload(message: Message) -> Any:
    data = message.get("data")
    return data[0] if isinstance(data, list) and len(data) == 1 else data


def lost_error(message: Message, room: str, request_id: str) -> Message:
    """The terminal ``error`` for a lost stream, addressed as ``message`` was."""
    payload = {
        "request_id": request_id,
        "room": room,
        "code": "unavailable",
        "message": LOST_MESSAGE,
        "retryable": True,
    }
    return {**message, "event": "error", "data": [payload], "skip_sid": None, "callback": None}


class _Waiting(NamedTuple):
    number: int  # ascending: which ones a finished publish took, whatever expired meanwhile
    at: float
    stream: Stream | None
    message: Message
    raw: bytes


class Outbox:
    def __init__(
        self,
        publish: Publish,
        encode: Encode,
        *,
        flush_s: float = 0.0,
        max_batch_bytes: int = 256 * 1024,
        max_age_s: float = 20.0,
        max_messages: int = 10_000,
        retry_s: float = 1.0,
    ) -> None:
        self._publish = publish
        self._encode = encode
        self.flush_s = flush_s
        self.max_batch_bytes = max_batch_bytes
        self.max_age_s = max_age_s
        self.max_messages = max_messages
        self.retry_s = retry_s
        self._numbers = itertools.count()
        self._waiting: deque[_Waiting] = deque()
        self._lost: dict[Stream, bytes] = {}  # stream -> its lost error, encoded
        self._ended: dict[Stream, float] = {}  # lost streams already ended
        self._urgent = False  # something waiting goes at once
        self._failing = False  # the last publish failed
        self._wake: asyncio.Future[None] | None = None  # the task waits out a window
        self._task: asyncio.Task[None] | None = None
        self.given_up = 0  # messages lost for good (for tests and logs)

    def __len__(self) -> int:
        return len(self._waiting)

    @property
    def holding(self) -> bool:
        """Redis does not take our messages: they wait for it (or a lost stream's error does)."""
        return self._failing or bool(self._lost)

    def add(self, message: Message) -> None:
        """Queue ``message`` behind the others; the task publishes it soon."""
        stream = stream_of(message)
        if stream is not None and (stream in self._lost or stream in self._ended):
            return  # after a gap: its lost error ends it for the other nodes instead
        raw = self._encode(message)
        self._waiting.append(_Waiting(next(self._numbers), time.monotonic(), stream, message, raw))
        if urgent(message, stream):
            self._hurry()
        if len(self._waiting) > self.max_messages:
            self._expire()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    def _hurry(self) -> None:
        """What waits goes at once."""
        self._urgent = True
        if self._wake is not None:
            _settle(self._wake)

    def ended(self, stream: Stream) -> bool:
        """Whether a stream was ended for the other nodes (its events no longer go there)."""
        return stream in self._lost or stream in self._ended

    def _expire(self) -> None:
        now = time.monotonic()
        if len(self._ended) > 10_000:  # forget the oldest half: long over by now
            for stream in list(self._ended)[:5_000]:
                del self._ended[stream]
        oldest = now - self.max_age_s - self.flush_s  # a window is no wait for Redis
        while self._waiting and (
            len(self._waiting) > self.max_messages or self._waiting[0].at < oldest
        ):
            self._give_up(self._waiting.popleft())

    def _give_up(self, item: _Waiting) -> None:
        self.given_up += 1
        stream = item.stream
        if stream is None or stream in self._lost:
            return
        logger.warning("room %s: events of request %s lost between nodes", *stream)
        self._lost[stream] = self._encode(lost_error(item.message, *stream))
        # its later messages would come after a gap: drop them, the error ends it
        self._waiting = deque(w for w in self._waiting if w.stream != stream)

    async def _window(self) -> None:
        """Until the oldest waiting message is ``flush_s`` old, or one must go at once."""
        loop = asyncio.get_running_loop()
        while self._waiting and not self._urgent:
            left = self._waiting[0].at + self.flush_s - time.monotonic()
            if left <= 0:
                return
            self._wake = wake = loop.create_future()
            timer = loop.call_later(left, _settle, wake)
            try:
                await wake
            finally:
                timer.cancel()
                self._wake = None

    def _batch(self) -> tuple[list[Stream], int, list[bytes]]:
        """The next publish: lost streams' errors first, then the oldest waiting messages
        (up to ``max_batch_bytes``, at least one); the number of the last one taken."""
        lost = list(self._lost)
        parts = [self._lost[stream] for stream in lost]
        size, last = sum(map(len, parts)), -1
        for item in self._waiting:
            if parts and size + len(item.raw) > self.max_batch_bytes:
                break
            parts.append(item.raw)
            size += len(item.raw)
            last = item.number
        if not self._waiting or last == self._waiting[-1].number:
            self._urgent = False  # all of it goes now; a cut batch leaves the rest urgent
        return lost, last, parts

    def _taken(self, lost: list[Stream], last: int) -> None:
        for stream in lost:
            if self._lost.pop(stream, None) is not None:
                self._ended[stream] = time.monotonic()
        while self._waiting and self._waiting[0].number <= last:
            self._waiting.popleft()

    async def _run(self) -> None:
        delay = 0.05
        while self._waiting or self._lost:
            if self.flush_s > 0:
                await self._window()
            self._expire()
            lost, last, parts = self._batch()
            if not parts:
                continue
            try:
                await self._publish(parts)
            except Exception:
                self._failing = True
                self._urgent = True  # when Redis is back, what waited goes at once
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_s)
                continue
            self._failing = False
            delay = 0.05
            self._taken(lost, last)

    async def aclose(self, flush_timeout_s: float = 0.0) -> None:
        """Stop; first, unless Redis is failing, publish what waits (for at most the timeout)."""
        task = self._task
        if task is None:
            return
        if flush_timeout_s > 0 and not self._failing and not task.done():
            self._hurry()
            await asyncio.wait([task], timeout=flush_timeout_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
