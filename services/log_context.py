"""Ids that every log line written on behalf of a request carries (``request_id``, ``user_id``).

A generation's task binds them once; the logging set-up copies them onto each record
made inside that task (the upstream client's lines included), so the ids need not be
passed down by hand.  A task gets a copy of its creator's context, so a binding never
leaks into other requests.
"""

from __future__ import annotations

from contextvars import ContextVar

_fields: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("log_context", default=())


def bind(**fields: str) -> None:
    """Add ``fields`` to the current context (the running task, after ``create_task``)."""
    _fields.set((*_fields.get(), *fields.items()))


def current() -> tuple[tuple[str, str], ...]:
    return _fields.get()
