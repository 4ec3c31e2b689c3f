"""python-socketio details the client works around, in one place."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

import socketio
from socketio import packet

from llm_relay_client.errors import CONNECTION_ERROR, ChatError

FLUSH_TIMEOUT_S = 2.0


def new_socket() -> socketio.AsyncClient:
    """Reconnection is ours (it resumes streams); SIGINT handling is the application's."""
    return socketio.AsyncClient(reconnection=False, handle_sigint=False)


async def disconnect_deliberately(sio: socketio.AsyncClient) -> None:
    """Send Socket.IO's DISCONNECT packet, wait until it is written, then close.

    ``AsyncClient.disconnect()`` queues that packet and closes the socket at once, so the
    packet may never be written and the server would see a lost transport (and keep our
    streams running for the resume grace period) instead of a deliberate disconnect
    (which closes their upstream requests at once).
    """
    eio = sio.eio
    if sio.connected and eio.state == "connected":
        for namespace in list(sio.namespaces):
            await sio._send_packet(sio.packet_class(packet.DISCONNECT, namespace=namespace))
        if eio.write_loop_task is not None:
            with suppress(TimeoutError):
                await asyncio.wait_for(eio.queue.join(), FLUSH_TIMEOUT_S)
    await eio.disconnect()
    if sio.connected:  # the Engine.IO disconnect handler did not run
        sio.connected = False
        sio.namespaces = {}


def refusal(data: Any) -> ChatError:
    """A ``connect_error`` argument as a ChatError.

    A refusal by the server comes as ``{message, data: {code, message}}``; a transport
    failure (no server, bad URL) as a plain message.
    """
    if isinstance(data, dict):
        inner = data.get("data")
        if isinstance(inner, dict) and isinstance(inner.get("code"), str):
            return ChatError.from_wire(inner)
        if isinstance(data.get("code"), str):
            return ChatError.from_wire(data)
        message = data.get("message")
        if isinstance(message, str):
            return ChatError(CONNECTION_ERROR, message, retryable=True)
    text = data if isinstance(data, str) and data else "Cannot connect to the server."
    return ChatError(CONNECTION_ERROR, text, retryable=True)
