"""Which requests' events we receive, and where each event goes: exactly once, in order.

A *track* follows one request: one of ours (it feeds a :class:`Stream`) or another
member's in a joined room (it feeds that :class:`Room`). Stream events (``token``,
``reasoning``, ``tool_call``: one ``seq`` counter across the three kinds) are kept only
when their ``seq`` follows the last one kept: a repeat (after a resume) is dropped, and a
gap (live events arriving before the resume's replay) asks for the missing part from
the server's stream log instead of delivering out of order. A terminal event whose
``last_seq`` (protocol 2) is ahead of what we have is held until the replay has brought
the rest (not for another member's request we saw nothing of: it just ends). Without
``last_seq`` (an older server), only in rooms do live events reach a resuming client (it
rejoined the room); there a terminal event that arrives while a resume is in flight is
held until the replay has caught up.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from llm_relay_client.errors import ChatError
from llm_relay_client.models import STREAM_EVENTS, TERMINAL_EVENTS, Done, Payload
from llm_relay_client.rooms import Room
from llm_relay_client.stream import Stream

Key: TypeAlias = tuple[str, str | None]  # (request_id, room): request ids belong to users

MAX_ENDED = 1_000  # ended requests remembered, so late repeats are dropped


@dataclass(slots=True, eq=False)
class Track:
    request_id: str
    room: str | None
    stream: Stream | None = None
    payload: Payload | None = None  # the chat payload, for our own requests
    last_seq: int = -1
    accepted: bool = False  # the server acknowledged it (or resumed it)
    resuming: bool = False  # a resume is in flight: the replay brings what is missing
    deferred: tuple[str, Payload] | None = None  # a room's terminal event held meanwhile
    held: tuple[str, Payload, int] | None = None  # a terminal event ahead of us, its last_seq

    @property
    def key(self) -> Key:
        return (self.request_id, self.room)


class Tracks:
    def __init__(self, rooms: dict[str, Room], heal: Callable[[Track], None]) -> None:
        self.last_done: Done | None = None
        self._rooms = rooms
        self._heal = heal
        self._open: dict[Key, Track] = {}
        self._ended: OrderedDict[Key, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def open(self) -> list[Track]:
        return list(self._open.values())

    def add(self, stream: Stream) -> Track:
        key = (stream.request_id, stream.room)
        if key in self._open:
            raise ChatError("invalid_payload", "This request_id is already in flight.")
        self._ended.pop(key, None)
        track = self._open[key] = Track(stream.request_id, stream.room, stream, stream.payload)
        return track

    def is_open(self, track: Track) -> bool:
        return self._open.get(track.key) is track

    def discard(self, track: Track) -> None:
        if self._open.get(track.key) is track:
            del self._open[track.key]

    def on_event(self, event: str, data: Any) -> None:
        """A stream event (``token``, ``reasoning``, ``tool_call``) or a terminal one."""
        payload = data if isinstance(data, dict) else {}
        rid = payload.get("request_id")
        room = payload.get("room")
        if not isinstance(rid, str):
            return  # a connection-level error (e.g. token_expired); the disconnect follows
        room = room if isinstance(room, str) else None
        key = (rid, room)
        track = self._open.get(key)
        if track is None:
            if room is None or room not in self._rooms or key in self._ended:
                return
            track = self._open[key] = Track(rid, room, accepted=True)
        if event in STREAM_EVENTS:
            seq = payload.get("seq")
            if type(seq) is not int or seq <= track.last_seq:
                return  # a repeat
            if seq > track.last_seq + 1:
                self._heal(track)  # a gap: the log replays it in order
                return
            track.last_seq = seq
            self._deliver(track, event, payload)
            if track.held is not None and track.last_seq >= track.held[2]:
                self.end(track, *track.held[:2])
        elif event in TERMINAL_EVENTS:
            last_seq = payload.get("last_seq")
            watched = track.stream is not None or track.last_seq >= 0
            if type(last_seq) is int and watched:
                if last_seq > track.last_seq:
                    track.held = (event, payload, last_seq)  # missed events: fetch them first
                    self._heal(track)
                else:
                    self.end(track, event, payload)
            elif track.resuming and track.room is not None:
                # In a room, live events reach us too: this one may overtake the replay.
                track.deferred = (event, payload)
            else:
                self.end(track, event, payload)

    def _deliver(self, track: Track, event: str, payload: Payload) -> None:
        if track.stream is not None:
            track.stream._feed(event, payload)
        if track.room is not None:
            room = self._rooms.get(track.room)
            if room is not None:
                room._feed(event, payload)

    def end(self, track: Track, event: str, payload: Payload) -> None:
        """Deliver the terminal event of a track, once."""
        if self._open.get(track.key) is not track:
            return
        del self._open[track.key]
        self._ended[track.key] = None
        if len(self._ended) > MAX_ENDED:
            self._ended.popitem(last=False)
        if event == "done" and track.stream is not None:
            self.last_done = Done.parse(payload)
        self._deliver(track, event, payload)

    def fail(self, track: Track, error: ChatError) -> None:
        payload = {**error.to_dict(), "request_id": track.request_id}
        if track.room is not None:
            payload["room"] = track.room
        self.end(track, "error", payload)

    def fail_ours(self, error: ChatError) -> None:
        """End our open requests with ``error``; forget other members' ones."""
        for track in self.open():
            if track.stream is None:
                self.discard(track)
            else:
                self.fail(track, error)
