"""Per-connection state shared by the transports: identity, rooms, token expiry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from auth.tokens import Identity


@dataclass(eq=False, slots=True)
class Connection:
    conn_id: str
    identity: Identity
    transport: str
    rooms: set[str] = field(default_factory=set)
    expiry: asyncio.TimerHandle | None = field(default=None, repr=False)
    closed: bool = False  # set by Relay.connection_closed
    closed_deliberately: bool = False

    def schedule_expiry(self, on_expired: Callable[[Connection], None]) -> None:
        """Call ``on_expired`` when the identity's token passes its ``exp``."""
        self.cancel_expiry()
        exp = self.identity.exp
        if exp is None:
            return
        loop = asyncio.get_running_loop()
        self.expiry = loop.call_later(max(exp - time.time(), 0.0), on_expired, self)

    def cancel_expiry(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None


class Connections:
    def __init__(self) -> None:
        self._by_id: dict[str, Connection] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, conn: Connection) -> None:
        self._by_id[conn.conn_id] = conn

    def get(self, conn_id: str) -> Connection | None:
        return self._by_id.get(conn_id)

    def pop(self, conn_id: str) -> Connection | None:
        conn = self._by_id.pop(conn_id, None)
        if conn is not None:
            conn.cancel_expiry()
        return conn

    def count(self, transport: str) -> int:
        return sum(1 for conn in self._by_id.values() if conn.transport == transport)

    def all(self) -> list[Connection]:
        return list(self._by_id.values())
