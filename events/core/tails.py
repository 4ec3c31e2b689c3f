"""Which clients are fed a request from the stream log (after ``resume``), not live.

A resumed client gets the request's events from the log, in ``seq`` order.  If it
also receives the request live (it is in the room the answer streams to, or it
resumed on the connection the request runs on), the live copy must not reach it,
or it would see events twice.  The transports ask ``skip`` before each live
delivery; the replay itself is delivered around the filter.

An entry lives from the moment the resume is accepted until both the replay has
ended *and* the live terminal event has passed the filter: the replay may read the
terminal from the log before the live copy arrives (the pipeline writes the log
first; across nodes the live copy comes later through the pub/sub channel), and
that late copy must be skipped too.  If the live terminal never comes here (the
stream had ended before the resume, or its node stopped), the entry lingers
``linger_s`` at most.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

STREAM_EVENTS = frozenset({"token", "reasoning", "tool_call", "done", "error"})
TERMINAL_EVENTS = frozenset({"done", "error"})
LINGER_S = 5.0

TailKey = tuple[str, str | None]  # (request_id, room)


@dataclass(slots=True, eq=False)
class _Tail:
    replaying: Counter[str] = field(default_factory=Counter)  # sid -> replays running
    lingering: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    ended: bool = False  # the live terminal has passed the filter


class TailRegistry:
    """Receivers (sids, or any id a transport uses) that get a request from the log."""

    def __init__(self, linger_s: float = LINGER_S) -> None:
        self._linger_s = linger_s
        self._tails: dict[TailKey, _Tail] = {}

    def __bool__(self) -> bool:
        return bool(self._tails)

    def __len__(self) -> int:
        return len(self._tails)

    def add(self, request_id: str, room: str | None, sid: str) -> None:
        """A replay to ``sid`` starts: live events of the request skip ``sid`` from now."""
        tail = self._tails.setdefault((request_id, room), _Tail())
        tail.replaying[sid] += 1
        handle = tail.lingering.pop(sid, None)
        if handle is not None:
            handle.cancel()

    def finish(self, request_id: str, room: str | None, sid: str) -> None:
        """The replay to ``sid`` ended; keep skipping until the live terminal has passed."""
        key = (request_id, room)
        tail = self._tails.get(key)
        if tail is None or tail.replaying[sid] <= 0:
            return
        tail.replaying[sid] -= 1
        if tail.replaying[sid] > 0:
            return
        del tail.replaying[sid]
        if not tail.ended:
            loop = asyncio.get_running_loop()
            tail.lingering[sid] = loop.call_later(self._linger_s, self._unlinger, key, sid)
        self._cleanup(key, tail)

    def forget(self, request_id: str, room: str | None) -> None:
        """A new request with this id starts here: lingering skips would hide it."""
        key = (request_id, room)
        tail = self._tails.get(key)
        if tail is None:
            return
        for handle in tail.lingering.values():
            handle.cancel()
        tail.lingering.clear()
        self._cleanup(key, tail)

    def _unlinger(self, key: TailKey, sid: str) -> None:
        tail = self._tails.get(key)
        if tail is not None:
            tail.lingering.pop(sid, None)
            self._cleanup(key, tail)

    def _cleanup(self, key: TailKey, tail: _Tail) -> None:
        if not tail.replaying and not tail.lingering and self._tails.get(key) is tail:
            del self._tails[key]

    def skip(self, event: str, data: Any, skip_sid: Any) -> Any:
        """``skip_sid`` for a live emit of ``event``, extended by the sids fed from the log."""
        if event not in STREAM_EVENTS or not isinstance(data, dict):
            return skip_sid
        request_id, room = data.get("request_id"), data.get("room")
        if not isinstance(request_id, str) or not (room is None or isinstance(room, str)):
            return skip_sid
        key = (request_id, room)
        tail = self._tails.get(key)
        if tail is None:
            return skip_sid
        skip = [*tail.replaying, *tail.lingering]
        if event in TERMINAL_EVENTS:
            tail.ended = True
            for handle in tail.lingering.values():
                handle.cancel()
            tail.lingering.clear()
            self._cleanup(key, tail)
        if not skip:
            return skip_sid
        if isinstance(skip_sid, list):
            skip.extend(skip_sid)
        elif skip_sid is not None:
            skip.append(skip_sid)
        return skip
