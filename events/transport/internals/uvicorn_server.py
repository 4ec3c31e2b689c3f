"""uvicorn's ``Server`` that drains the relay before it closes any connection.

Read from uvicorn 0.55.0 (``Server.handle_exit``, ``Server.capture_signals``,
``Server.shutdown``).  A correctness override, not a speed one: uvicorn, on SIGTERM,
closes every open WebSocket (code 1012) *before* the application's lifespan shutdown
runs, so a drain done there comes too late for clients to see their terminal events.
``GracefulServer`` drains first: the first SIGTERM/SIGINT stops new connections and
requests (``begin_shutdown``), streams in flight may finish for ``grace_s``, the rest
end, the events reach the clients (``drain``, ``close_clients``), and only then does
uvicorn close connections.  A second signal ends the grace period (``hurry``); a third
forces the exit.  The process exits 0 after a graceful stop (uvicorn on its own
re-raises the signal after restoring the handlers).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Protocol

import uvicorn
from uvicorn.server import HANDLED_SIGNALS


class Drainable(Protocol):
    """What the server stops before uvicorn closes connections (``server.lifecycle.Runtime``)."""

    def begin_shutdown(self) -> None: ...  # called in a signal handler: flags only

    def hurry(self) -> None: ...  # the same

    async def drain(self, grace_s: float) -> None: ...

    async def close_clients(self) -> None: ...


class GracefulServer(uvicorn.Server):
    """A uvicorn server that drains ``runtime`` before it closes any connection."""

    def __init__(self, config: uvicorn.Config, runtime: Drainable, grace_s: float) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.grace_s = grace_s
        self.signals_received = 0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in a signal handler: only set flags; the event loop does the work.
        self.signals_received += 1
        self.runtime.begin_shutdown()
        if self.signals_received == 2:
            self.runtime.hurry()
        elif self.signals_received > 2:
            self.force_exit = True
        self.should_exit = True

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install our handlers; unlike uvicorn, don't re-raise the signal afterwards."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        runtime = self.runtime
        runtime.begin_shutdown()
        await runtime.drain(self.grace_s)
        await runtime.close_clients()
        await super().shutdown(sockets)
