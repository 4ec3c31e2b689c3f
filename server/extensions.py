"""Extending the server: the one place where extra events and HTTP routes come in.

An ``Extension`` bundles Socket.IO client events (``events.core.extension.EventSpec``: payload
model, handler, error codes), the server→client events it sends (``EventDoc``, for the
documentation) and FastAPI routers.  ``create_app(settings, extensions=[...])`` registers
them; without that argument it uses ``installed(settings)`` below, which is what
``python -m server`` and ``uvicorn server.main:app`` run.  Nothing registers itself on
import.  ``/asyncapi.json``, ``/docs/events`` and ``/docs`` show the new pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import APIRouter

from events.core.catalog import EventDoc
from events.core.extension import EventSpec
from server.settings import Settings


@dataclass(frozen=True)
class Extension:
    name: str
    events: Sequence[EventSpec] = ()  # client→server events and their handlers
    emits: Sequence[EventDoc] = ()  # server→client events its handlers send
    routers: Sequence[APIRouter] = ()  # HTTP routes (FastAPI)


def installed(settings: Settings) -> list[Extension]:
    """The extensions a server runs with when ``create_app`` is given none.

    Add yours here, e.g. ``return [echo_extension(settings)]``.
    """
    return []


def documented_events(extensions: Sequence[Extension]) -> list[EventDoc]:
    return [doc for ext in extensions for doc in (*ext.events, *ext.emits)]
