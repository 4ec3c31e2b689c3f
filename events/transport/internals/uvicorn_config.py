"""The serving settings of ``python -m server``, also under ``uvicorn server.main:app``.

``python -m server`` builds uvicorn's ``Config`` itself (``server.serve.uvicorn_config``):
the header deadline (``HeaderTimeoutProtocol``), the WebSocket protocol that can abort a
client that does not read and reports a lost transport as 1006
(``RelayWebSocketProtocol``), ``MAX_FRAME_BYTES`` as the frame cap, no per-message
deflate, the trusted proxies.  Under plain ``uvicorn server.main:app`` the ``Config`` is
uvicorn's, built from its command line, and it imports ``server.main`` from
``Config.load_app`` — called by ``uvicorn.run`` before ``Config.load`` (which then picks
the protocol classes from ``http``/``ws``), or by ``load`` after picking them, and in
both cases before the proxy-headers middleware is built.  ``adopt_serving_settings``
finds that ``Config`` on the call stack and sets the same values, so both start commands
behave alike (PROTOCOL.md §5).
Outside uvicorn (a test importing ``server.main``) it changes nothing.

Read from uvicorn 0.55.0 (``Config.load`` and ``Config.load_app``; the attributes
``http``, ``ws``, ``http_protocol_class``, ``ws_protocol_class``, ``ws_max_size``,
``ws_per_message_deflate``, ``forwarded_allow_ips``).  What it buys: correctness, not
measured (the limits of PROTOCOL.md §5 hold whatever the start command).
tests/unit/test_internals_contract.py checks the hooked names;
tests/chaos/test_raw_close.py runs ``uvicorn server.main:app`` and checks the frame cap,
the header deadline and a lost transport's code.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence

import uvicorn

from events.transport.internals.uvicorn_http import HeaderTimeoutProtocol
from events.transport.internals.uvicorn_websocket import RelayWebSocketProtocol


def loading_config() -> uvicorn.Config | None:
    """The uvicorn ``Config`` whose ``load`` is importing the app right now, if any."""
    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, uvicorn.Config) and frame.f_code.co_name in ("load", "load_app"):
            return candidate
        frame = frame.f_back  # type: ignore[assignment]
    return None


def adopt_serving_settings(
    *, header_timeout_s: float, max_frame_bytes: int, trusted_proxies: Sequence[str]
) -> bool:
    """Give the ``Config`` being loaded ``python -m server``'s protocols and limits."""
    config = loading_config()
    if config is None:
        return False
    http = functools.partial(HeaderTimeoutProtocol, header_timeout_s=header_timeout_s)
    # the inputs (``run`` may import the app before ``load`` reads them) and, when
    # ``load`` has read them already, the classes it chose
    config.http = http  # type: ignore[assignment]
    config.ws = RelayWebSocketProtocol
    if hasattr(config, "http_protocol_class"):
        config.http_protocol_class = http  # type: ignore[assignment]
    if hasattr(config, "ws_protocol_class"):
        config.ws_protocol_class = RelayWebSocketProtocol
    config.ws_max_size = max_frame_bytes
    config.ws_per_message_deflate = False
    config.forwarded_allow_ips = list(trusted_proxies) or ["127.0.0.1"]
    return True
