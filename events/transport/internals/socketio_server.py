"""python-socketio pieces we adjust: the server and its client managers.

* Client-sent events named like reserved ones (``connect``, ``disconnect``…) are
  ignored instead of reaching those handlers (PROTOCOL.md §6).
* Hostile input ends in an error or a clean close, never in a stuck or leaked
  connection: a packet that does not parse, an event that is not ``[name, ...]``,
  binary attachments (not part of the protocol, §6; python-socketio would hold them, and
  a wrong attachment count wedges the connection), Engine.IO garbage on a WebSocket,
  and a client that sends but never reads (its outgoing queue is bounded) are closed.
  An unknown event that asks for an acknowledgement gets ``invalid_payload``.
* Stream events for a client that is being fed from the stream log (after ``resume``)
  are not also delivered live to it: the managers skip such sids on this node, so a
  resumed client sees every token exactly once.  Works for the in-memory manager and,
  on every node, for the Redis manager.  The replay itself is emitted with
  ``ignore_queue=True`` (straight to the local sid) and is not filtered.
* The Redis manager keeps a local sid's events off Redis (a sid lives on one node),
  never lets a Redis outage hold up local delivery, and recovers by itself.
* Local delivery encodes an event once and queues it on each recipient's socket
  (``emit_here``), instead of python-socketio's task per recipient: the token path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Container
from typing import Any

import orjson
import redis.asyncio as aioredis
import socketio
from engineio import packet as eio_packet
from engineio.async_drivers import asgi as eio_asgi
from socketio import packet as sio_packet

from events.core.errors import ErrorCode, ProtocolError
from events.core.tails import TailRegistry
from events.transport.internals.engineio_socket import MAX_QUEUED_PACKETS, RelayEngineServer
from events.transport.internals.pubsub_outbox import Outbox
from services.storage.redis_client import Breaker, redis_client

logger = logging.getLogger(__name__)

RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "__disconnect_final"})
# Engine.IO packet types a client may send on a WebSocket: close, ping, pong, message,
# upgrade, noop.  Anything else (open, binary frames, garbage) closes the transport.
_CLIENT_EIO_TYPES = frozenset("123456")

__all__ = ["MemoryManager", "RedisManager", "RelayServer", "TailRegistry"]


class _StrictWebSocket(eio_asgi.WebSocket):  # type: ignore[misc]
    """The ASGI WebSocket of Engine.IO, closing on frames that are no Engine.IO text packet.

    python-engineio raises on such a frame outside its error handling, which leaves the
    session behind until its ping timeout; raising ``OSError`` here ends it cleanly.
    """

    environ: dict[str, Any] | None = None

    async def __call__(self, environ: dict[str, Any]) -> Any:
        self.environ = environ  # its scope offers the transport's abort (invariant 7)
        return await super().__call__(environ)

    async def wait(self) -> Any:
        data = await super().wait()
        if not isinstance(data, str) or data[:1] not in _CLIENT_EIO_TYPES:
            raise OSError("not an Engine.IO text packet")
        return data


class RelayServer(socketio.AsyncServer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        connect_timeout_s: float = 45.0,
        send_timeout_s: float = 30.0,
        max_send_buffer_bytes: int = 4_194_304,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # invariant 7: a client that drains nothing for this long, or leaves this much
        # unsent, has its transport aborted (engineio_socket.RelaySocket.cut_off)
        self.eio.send_timeout_s = send_timeout_s
        self.eio.max_send_buffer_bytes = max_send_buffer_bytes
        # An Engine.IO session must join the namespace within this (as Socket.IO's
        # connectTimeout), or it is closed: answering pings alone holds no connection.
        self.connect_timeout_s = connect_timeout_s
        self._tasks: set[asyncio.Task[None]] = set()
        # Engine.IO handles a connection's packets in order (Socket.IO still runs event
        # handlers as tasks): a client's DISCONNECT packet is then seen before the
        # socket closes, so a deliberate disconnect is told apart from a lost transport.
        self.eio.async_handlers = False
        # The drivers' table is shared by every engineio server: copy, then replace.
        self.eio._async = {**self.eio._async, "websocket": _StrictWebSocket}

    async def close_transport(self, eio_sid: str, why: str) -> None:
        """Close a client's Engine.IO session now (its streams stop, as on a disconnect)."""
        sock = self.eio.sockets.get(eio_sid)
        if sock is None or sock.closed or sock.closing:
            return
        logger.info("closing connection %s: %s", eio_sid, why)
        await sock.close(wait=False, abort=False, reason=self.reason.SERVER_DISCONNECT)
        sock.queue.put_nowait(None)  # ends the transport's writer, which closes the socket

    async def _handle_eio_connect(self, eio_sid: str, environ: Any) -> Any:
        result = await super()._handle_eio_connect(eio_sid, environ)
        loop = asyncio.get_running_loop()
        loop.call_later(self.connect_timeout_s, self._connect_deadline, eio_sid)
        return result

    def _connect_deadline(self, eio_sid: str) -> None:
        if eio_sid in self.eio.sockets and not self.manager.sid_from_eio_sid(eio_sid, "/"):
            task = asyncio.ensure_future(self.close_transport(eio_sid, "no connect in time"))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if not isinstance(data, str):
            await self.close_transport(eio_sid, "binary attachments are not supported")
            return
        sock = self.eio.sockets.get(eio_sid)
        if sock is not None and sock.queue.qsize() > MAX_QUEUED_PACKETS:
            await self.close_transport(eio_sid, "the client does not read its events")
            return
        try:
            pkt = self.packet_class(encoded_packet=data)
        except Exception:
            await self.close_transport(eio_sid, "malformed Socket.IO packet")
            return
        kind = pkt.packet_type
        if kind in (sio_packet.EVENT, sio_packet.ACK) and not self.manager.sid_from_eio_sid(
            eio_sid, pkt.namespace or "/"
        ):
            await self.close_transport(eio_sid, "packet for a namespace it has not joined")
            return
        if kind == sio_packet.EVENT:
            if not isinstance(pkt.data, list) or not pkt.data or not isinstance(pkt.data[0], str):
                await self.close_transport(eio_sid, "malformed event packet")
                return
            await self._handle_event(eio_sid, pkt.namespace, pkt.id, pkt.data)
        elif kind == sio_packet.CONNECT:
            await self._handle_connect(eio_sid, pkt.namespace, pkt.data)
        elif kind == sio_packet.DISCONNECT:
            await self._handle_disconnect(eio_sid, pkt.namespace, self.reason.CLIENT_DISCONNECT)
        elif kind == sio_packet.ACK:
            await self._handle_ack(eio_sid, pkt.namespace, pkt.id, pkt.data)
        elif kind in (sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK):
            await self.close_transport(eio_sid, "binary attachments are not supported")
        else:
            await self.close_transport(eio_sid, "unexpected Socket.IO packet type")

    def _engineio_server_class(self) -> type[RelayEngineServer]:
        return RelayEngineServer  # leaner WebSocket loop per connection (engineio_socket.py)

    def start_manager(self) -> None:
        """Start the client manager now (python-socketio waits for the first client),
        so a node receives other nodes' events, and reports on Redis, from the start."""
        if not getattr(self, "manager_initialized", False):
            self.manager_initialized = True
            self.manager.initialize()

    async def stop_manager(self) -> None:
        close = getattr(self.manager, "aclose", None)
        if close is not None:
            await close()

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: Any, data: Any) -> None:
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            return
        name = data[0]
        if name in RESERVED_EVENTS:
            return
        namespace = namespace or "/"
        handlers = self.handlers.get(namespace, {})
        if id is not None and name not in handlers and "*" not in handlers:
            sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
            if sid is not None and self.manager.is_connected(sid, namespace):
                error = ProtocolError(ErrorCode.INVALID_PAYLOAD, f"Unknown event {name[:64]!r}.")
                ack = {"ok": False, "error": error.to_wire()}
                await self._send_packet(
                    eio_sid,
                    self.packet_class(sio_packet.ACK, namespace=namespace, id=id, data=[ack]),
                )
            return
        await super()._handle_event(eio_sid, namespace, id, data)


def encode_event(event: str, data: Any, namespace: str) -> eio_packet.Packet | None:
    """The Engine.IO packet of a Socket.IO EVENT, or None when it needs the generic path.

    Our stream payloads are JSON objects (never binary), so the packet is one orjson
    call; anything else (tuples of arguments, bytes) goes through python-socketio.
    """
    if not isinstance(data, dict):
        return None
    try:
        body = orjson.dumps([event, data]).decode()
    except TypeError:  # bytes, non-string keys, huge integers
        return None
    prefix = "2" if namespace == "/" else f"2{namespace},"
    return eio_packet.Packet(eio_packet.MESSAGE, prefix + body)


class MemoryManager(socketio.AsyncManager):  # type: ignore[misc]
    """The in-memory manager, with a cheaper emit for the events we send most.

    python-socketio's ``emit`` runs one asyncio task per recipient and waits for all of
    them; putting a packet on an Engine.IO socket's queue never blocks, so we encode the
    packet once and hand it to each recipient's socket in turn (same order, no tasks).
    """

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
        room = to or room
        if callback is None and await emit_here(self, event, data, namespace, room, skip_sid):
            return
        await super().emit(
            event,
            data,
            namespace,
            room=room,
            skip_sid=skip_sid,
            callback=callback,
            **kwargs,
        )


async def emit_here(
    manager: socketio.AsyncManager, event: str, data: Any, namespace: str, room: Any, skip_sid: Any
) -> bool:
    """Deliver an event to ``room``'s participants on this node: one encode, no tasks.

    False (nothing sent) when the event needs python-socketio's own path: several rooms,
    or a payload that is not a JSON object orjson can encode.
    """
    if not isinstance(room, str):
        return False
    pkt = encode_event(event, data, namespace)
    if pkt is None:
        return False
    participants = manager.rooms.get(namespace, {}).get(room)
    if not participants:
        return True
    if skip_sid is None:
        skip: Container[str] = ()
    elif isinstance(skip_sid, list):
        skip = skip_sid
    else:
        skip = (skip_sid,)
    eio = manager.server.eio
    for sid, eio_sid in list(participants.items()):
        if sid not in skip:
            await eio.send_packet(eio_sid, pkt)
    return True


class RedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """Events between nodes over Redis pub/sub (JSON; python-socketio ≥ 5.14 never pickles).

    Kinder to a Redis outage than the base class: local delivery never waits for Redis
    (a failed publish waits in the ``Outbox``, later ones behind it, and is retried in
    order; one given up ends its stream for the other nodes with ``unavailable``), and
    the subscriber reconnects with a backoff capped at ``retry_s`` (not 60 s), so
    cross-node delivery resumes soon after Redis is back.
    """

    def __init__(
        self,
        url: str,
        tails: TailRegistry,
        channel: str = "llm-relay",
        *,
        retry_s: float = 1.0,
        timeout_s: float = 2.0,
        breaker: Breaker | None = None,
    ) -> None:
        super().__init__(url, channel=channel)
        self.tails = tails
        self.retry_s = retry_s
        self.timeout_s = timeout_s  # REDIS_TIMEOUT_S: a publish waits no longer
        self.breaker = breaker
        # failed publishes wait here, in order; kept 10x REDIS_TIMEOUT_S, then given up
        self.outbox = Outbox(self._publish_now, max_age_s=10 * timeout_s, retry_s=retry_s)
        self.listening = False
        # told of every event that arrives from another node; False drops it
        # (events.core.orphans: a duplicate, or after the stream's end)
        self.remote_events: Callable[[str, Any], bool] | None = None
        self._client: aioredis.Redis | None = None
        self._outage = False

    @property
    def relaying(self) -> bool:
        """Subscribed, and no publish waiting for Redis."""
        return self.listening and not self.outbox.holding

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            self._client = redis_client(
                self.redis_url, timeout_s=self.timeout_s, breaker=self.breaker
            )
        return self._client

    def _trouble(self, what: str, exc: Exception) -> None:
        if not self._outage:
            self._outage = True
            logger.warning("Redis %s failed, cross-node delivery degraded: %s", what, exc)

    def _recovered(self) -> None:
        if self._outage:
            self._outage = False
            logger.info("Redis reachable again, cross-node delivery restored")

    async def _publish(self, data: Any) -> Any:
        """Publish, or queue behind earlier failures (events.transport.internals.pubsub_outbox):
        local delivery never waits for Redis, remote members never see a silent gap."""
        if self.outbox.holding or not isinstance(data, dict):
            if isinstance(data, dict):
                self.outbox.add(data)
            return None
        try:
            result = await self._publish_now(data)
        except Exception as exc:
            self._trouble("publish", exc)
            self.outbox.add(data)
            return None
        if self.listening:
            self._recovered()
        return result

    async def _publish_now(self, data: dict[str, Any]) -> Any:
        return await self._redis().publish(self.channel, self.json.dumps(data))

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        delay = 0.1
        while True:
            pubsub = self._redis().pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.listening = True
                self._recovered()
                delay = 0.1
                async for message in pubsub.listen():
                    yield message
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._trouble("subscription", exc)
            finally:
                self.listening = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_s)

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        target = to or room
        ns = namespace or "/"
        if (
            callback is None
            and not kwargs.get("ignore_queue")
            and isinstance(target, str)
            and target in self.rooms.get(ns, {}).get(None, ())
        ):
            # A sid lives on one node, this one: its private events need not cross Redis.
            if self.tails:
                skip_sid = self.tails.skip(event, data, skip_sid)
            if await emit_here(self, event, data, ns, target, skip_sid):
                return
            kwargs["ignore_queue"] = True
        await super().emit(
            event,
            data,
            namespace=namespace,
            room=room,
            skip_sid=skip_sid,
            callback=callback,
            to=to,
            **kwargs,
        )

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if self.remote_events is not None:
            data = message.get("data")
            if (
                isinstance(data, list)
                and len(data) == 1
                and not self.remote_events(message.get("event", ""), data[0])
            ):
                return
        if self.tails:
            message = dict(message)
            data = message.get("data")
            payload = data[0] if isinstance(data, list) and len(data) == 1 else data
            message["skip_sid"] = self.tails.skip(
                message.get("event", ""), payload, message.get("skip_sid")
            )
        data = message.get("data")
        if (
            message.get("callback") is None
            and not message.get("binary")
            and isinstance(data, list)
            and len(data) == 1
            and await emit_here(
                self,
                message.get("event", ""),
                data[0],
                message.get("namespace") or "/",
                message.get("room"),
                message.get("skip_sid"),
            )
        ):
            return
        await super()._handle_emit(message)

    async def aclose(self) -> None:
        await self.outbox.aclose()
        task = getattr(self, "thread", None)
        if isinstance(task, asyncio.Future) and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=5)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
