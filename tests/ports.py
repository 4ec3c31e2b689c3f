"""Loopback ports for servers the tests start as separate processes.

The kernel may hand the same ephemeral port to two ``bind(0)`` calls in a row once the
first socket is closed, and a server started on a port another test server already holds
fails to bind while its readiness probe is answered by the other one.  So no port is
handed out twice in one test run.
"""

from __future__ import annotations

import socket

_handed_out: set[int] = set()


def free_port() -> int:
    """A port that was free a moment ago and that no earlier call returned."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
