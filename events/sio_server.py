"""python-socketio pieces we adjust: the server and its client managers.

* Client-sent events named like reserved ones (``connect``, ``disconnect``…) are
  ignored instead of reaching those handlers (PROTOCOL.md §6).
* Stream events for a client that is being fed from the stream log (after ``resume``)
  are not also delivered live to it: the managers skip such sids on this node, so a
  resumed client sees every token exactly once.  Works for the in-memory manager and,
  on every node, for the Redis manager.  The replay itself is emitted with
  ``ignore_queue=True`` (straight to the local sid) and is not filtered.
"""

from __future__ import annotations

from typing import Any

import socketio

from events.tails import TailRegistry

RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "__disconnect_final"})

__all__ = ["MemoryManager", "RedisManager", "RelayServer", "TailRegistry"]


class RelayServer(socketio.AsyncServer):  # type: ignore[misc]
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Engine.IO handles a connection's packets in order (Socket.IO still runs event
        # handlers as tasks): a client's DISCONNECT packet is then seen before the
        # socket closes, so a deliberate disconnect is told apart from a lost transport.
        self.eio.async_handlers = False

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: Any, data: Any) -> None:
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            return
        if data[0] in RESERVED_EVENTS:
            return
        await super()._handle_event(eio_sid, namespace, id, data)


class MemoryManager(socketio.AsyncManager):  # type: ignore[misc]
    def __init__(self, tails: TailRegistry) -> None:
        super().__init__()
        self.tails = tails

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        if self.tails and not kwargs.get("ignore_queue"):
            skip_sid = self.tails.skip(event, data, skip_sid)
        await super().emit(
            event,
            data,
            namespace,
            room=room,
            skip_sid=skip_sid,
            callback=callback,
            to=to,
            **kwargs,
        )


class RedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    def __init__(self, url: str, tails: TailRegistry, channel: str = "llm-relay") -> None:
        super().__init__(url, channel=channel)
        self.tails = tails

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if self.tails:
            message = dict(message)
            data = message.get("data")
            payload = data[0] if isinstance(data, list) and len(data) == 1 else data
            message["skip_sid"] = self.tails.skip(
                message.get("event", ""), payload, message.get("skip_sid")
            )
        await super()._handle_emit(message)
