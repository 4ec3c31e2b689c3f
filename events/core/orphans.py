"""Room streams of other nodes, watched: a node that dies must not leave members in silence.

(Also: a stream event that arrives twice — a publish retried after a timeout may have
reached Redis both times — or after the stream's end is dropped here: ``seen`` says so.)

Invariant 6: a stream whose node is gone ends for everyone watching it with
``error {code: "server_shutdown"}`` within 20 s.  A member on another node gets the
stream live through Redis; when the node running it is killed, nothing more comes —
no terminal event either.  ``RemoteStreams`` notes every room stream event that
arrives from another node (``seen``) until its terminal event; once a second it looks
at the streams that have been silent for a while: when the stream log says the
stream's node has no current lease (``NODE_LEASE_S`` after its last heartbeat), the
members here get ``server_shutdown`` — from this node only, so each member gets it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from events.core.errors import ErrorCode, ProtocolError
from services.storage import UNAVAILABLE_ERRORS
from services.storage.streamlog import StreamMeta

logger = logging.getLogger(__name__)

TERMINAL = frozenset({"done", "error"})
UNKNOWN_S = 15.0  # a stream the log does not know ends after this long a silence
STREAM_EVENTS = frozenset({"token", "reasoning", "tool_call", "message", "done", "error"})

Emit = Callable[[str, dict[str, Any], str], Awaitable[None]]  # (event, payload, room)


class NodeLeases(Protocol):
    async def find_in_room(self, room: str, request_id: str) -> StreamMeta | None: ...
    async def node_alive(self, node: str) -> bool: ...


class RemoteStreams:
    def __init__(
        self, log: NodeLeases, emit_here: Emit, *, every_s: float = 1.0, silent_s: float = 1.0
    ) -> None:
        self._log = log
        self._emit_here = emit_here
        self._every_s = every_s
        self._silent_s = silent_s
        self._seen: dict[tuple[str, str], float] = {}  # (room, request_id) -> last event
        self._last_seq: dict[tuple[str, str], int] = {}  # the highest seq delivered here
        self._ended: dict[tuple[str, str], None] = {}  # streams whose terminal came (FIFO)
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, event: str, payload: Any) -> bool:
        """An event that came from another node through Redis (any room, any event);
        ``False`` for one to drop: a stream event again (a publish retried after a
        timeout may have reached Redis the first time too) or after the stream's end."""
        if event not in STREAM_EVENTS or not isinstance(payload, dict):
            return True
        room, request_id = payload.get("room"), payload.get("request_id")
        if not isinstance(room, str) or not isinstance(request_id, str):
            return True
        key = (room, request_id)
        seq = payload.get("seq")
        if isinstance(seq, int):
            if seq <= self._last_seq.get(key, -1):
                return False
            self._last_seq[key] = seq
        if event in TERMINAL:
            if key in self._ended:
                return False
            self._ended[key] = None
            if len(self._ended) > 10_000:
                del self._ended[next(iter(self._ended))]
            self._seen.pop(key, None)
            self._last_seq.pop(key, None)
        elif key in self._ended:
            return False
        else:
            self._seen[key] = time.monotonic()
            if self._task is None:
                self._task = asyncio.create_task(self._watch())
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            with contextlib.suppress(*UNAVAILABLE_ERRORS):  # Redis out: look again later
                await self.check()

    async def check(self) -> None:
        now = time.monotonic()
        silent = [key for key, at in self._seen.items() if now - at >= self._silent_s]
        for room, request_id in silent:
            meta = await self._log.find_in_room(room, request_id)
            if meta is None and now - self._seen.get((room, request_id), now) < UNKNOWN_S:
                continue  # not in the log (Redis was out when it began): only a long silence
            if meta is not None and (meta.node is None or await self._log.node_alive(meta.node)):
                continue
            if self._seen.pop((room, request_id), None) is None:
                continue  # its terminal event arrived meanwhile
            if meta is not None and meta.ended:
                self._last_seq.pop((room, request_id), None)
                continue  # ended normally; its terminal reached us some other way
            logger.warning("room %s: request %s lost its node; ending it", room, request_id)
            self._ended[(room, request_id)] = None
            self._last_seq.pop((room, request_id), None)
            error = ProtocolError(ErrorCode.SERVER_SHUTDOWN, "The server running it stopped.")
            await self._emit_here(
                "error", {"request_id": request_id, "room": room, **error.to_wire()}, room
            )

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
