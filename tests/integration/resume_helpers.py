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


def assert_ends_with_shutdown(rec: Recorder, request_id: str, first_seq: int) -> None:
    """Invariant 6, a stream whose node is gone: the logged tokens from ``first_seq`` on,
    gapless, then exactly one terminal event, ``error {code: "server_shutdown"}``."""
    events = rec.of(request_id)
    terminals = [(e, d) for e, d in events if e in ("done", "error")]
    assert len(terminals) == 1, f"lost: {len(terminals)} terminal events: {terminals}"
    event, data = terminals[0]
    assert (event, data.get("code")) == ("error", "server_shutdown"), f"lost: ended {data}"
    assert events[-1][0] == "error", events[-3:]
    seqs = [d["seq"] for e, d in events if e == "token"]
    assert seqs == list(range(first_seq, first_seq + len(seqs))), f"lost: a gap: {seqs}"


def assert_live_then_replay(rec: Recorder, request_id: str, first_replayed: int, text: str) -> None:
    """A client that got the request live and then resumed from ``first_replayed`` on:
    the live part is gapless from 0, the replay gapless from ``first_replayed`` to the
    end (live copies skipped it meanwhile), one terminal event last, and the tokens by
    ``seq`` give exactly the upstream's text."""
    tokens = rec.tokens(request_id)
    seqs = [t["seq"] for t in tokens]
    cut = next((i for i in range(1, len(seqs)) if seqs[i] <= seqs[i - 1]), len(seqs))
    assert seqs[:cut] == list(range(cut)), seqs
    assert seqs[cut:] == list(range(first_replayed, first_replayed + len(seqs) - cut)), seqs
    by_seq = {t["seq"]: t["content"] for t in tokens}
    assert sorted(by_seq) == list(range(len(by_seq)))
    assert "".join(by_seq[s] for s in range(len(by_seq))) == text
    events = [e for e, _ in rec.of(request_id)]
    assert events.count("done") + events.count("error") == 1
    assert events[-1] in ("done", "error")
