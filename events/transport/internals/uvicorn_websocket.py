"""uvicorn's WebSocket protocol (``websockets``, sans-I/O) with a lighter receive queue,
and a way for the application to abort a connection.

Read from uvicorn 0.55.0 (``WebSocketsSansIOProtocol.__init__``; the protocol calls only
``put_nowait``, ``get`` and ``empty`` on ``self.queue``, which the contract test checks).

Every connection keeps its protocol object for its whole life; uvicorn gives each an
``asyncio.Queue`` for received messages (three deques and an ``asyncio.Event``) where
``PacketQueue`` does the same job in a fraction of that.  Measured (``python -m bench
--repeat 3``, a checkout running stock ``websockets-sansio`` as "before"): RSS per idle
connection 33.7 → 30.9 KiB (-2.7 KiB, -8%; RSS is steady run to run); CPU per 100k
tokens not measurably different (run-to-run spread on the shared machine about ±30%).

Invariant 7 needs a client that does not read to be *aborted*: an ASGI ``websocket.close``
waits (in ``send``) until the transport drains, which such a client never lets happen.
The scope's extension ``llm-relay.abort`` holds ``{"abort": callable}``, which aborts
the transport at once; the application then receives ``websocket.disconnect`` (1006).
Read from uvicorn 0.55.0 (``WebSocketsSansIOProtocol.handle_connect`` builds the scope,
``connection_lost`` reports the close code); correctness, not measured.

The same extension's ``send_text`` writes a text message at once, as uvicorn's ``send``
(read from uvicorn 0.55.0) does once ``writable`` is set, and declines (returns False)
whenever ``send`` would wait or refuse, so the caller goes through ASGI instead.
``RelaySocket.send`` (engineio_socket.py) uses it when nothing is queued: the measured
gain is there.

A transport lost without a close frame is reported as 1006 (RFC 6455 §7.1.5): uvicorn's
sans-I/O protocol reports 1005 there, the code of a close frame *without* a status
code, which the protocol counts as a deliberate close (PROTOCOL.md §1 invariant 3).
Correctness, not measured; tests/unit/test_internals_contract.py checks both hooks.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

from events.transport.internals.packet_queue import PacketQueue

ABORT_EXTENSION = "llm-relay.abort"


class RelayWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = PacketQueue()  # type: ignore[assignment]  # same put_nowait/get/empty

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # absent when the handshake was refused
        if scope is not None:  # the app's task is created but has not run yet
            scope["extensions"][ABORT_EXTENSION] = {
                "abort": self.abort_transport,
                "send_text": self.send_text_now,
            }

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn.close_rcvd is None and not self.close_sent:
            self.handshake_complete = False  # no close frame: uvicorn then reports 1006
        super().connection_lost(exc)

    def send_text_now(self, text: str) -> bool:
        """Write a text message at once, as ``send`` would; False (nothing written) when
        ``send`` would wait or refuse: the caller then goes through ASGI's ``send``."""
        if (
            self.disconnected
            or self.close_sent
            or not self.handshake_complete
            or self.initial_response is not None
            or not self.writable.is_set()
        ):
            return False
        try:
            self.conn.send_text(text.encode())
        except InvalidState:
            return False
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    def abort_transport(self) -> None:
        if not self.transport.is_closing():
            self.transport.abort()
