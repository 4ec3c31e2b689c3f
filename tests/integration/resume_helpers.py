"""Shared steps of the resume tests: start a stream, lose it, come back."""

from __future__ import annotations

from typing import Any

from tests.harness import Recorder, make_token

USER_MSG = [{"role": "user", "content": "Say hello"}]


def chat(request_id: str, model: str = "double/slow", **extra: Any) -> dict[str, Any]:
    return {"request_id": request_id, "messages": USER_MSG, "model": model, **extra}


async def connect(url: str, rec: Recorder, sub: str = "alice") -> Recorder:
    await rec.connect(url, make_token(sub, name=sub.title()))
    await rec.wait_event("session")
    return rec


async def wait_seq(rec: Recorder, request_id: str, seq: int, timeout: float = 15) -> None:
    await rec.wait_for(
        lambda e, d: e == "token" and d.get("request_id") == request_id and d["seq"] >= seq,
        timeout,
    )


def kept_text(rec: Recorder, request_id: str, upto: int) -> str:
    """What a client had rendered when it remembered ``last_seq = upto - 1``."""
    tokens = [t for t in rec.tokens(request_id) if t["seq"] < upto]
    assert [t["seq"] for t in tokens] == list(range(upto))
    return "".join(t["content"] for t in tokens)


def assert_resumed_stream(rec: Recorder, request_id: str, first_seq: int) -> tuple[str, Any]:
    """After ``resume`` with ``last_seq = first_seq - 1``: every later token once, in order,
    then exactly one terminal event and nothing after it."""
    events = rec.of(request_id)
    terminals = [i for i, (e, _d) in enumerate(events) if e in ("done", "error")]
    assert len(terminals) == 1, events
    assert terminals[0] == len(events) - 1, events
    seqs = [d["seq"] for e, d in events if e == "token"]
    assert seqs == list(range(first_seq, first_seq + len(seqs))), seqs
    return events[-1]
