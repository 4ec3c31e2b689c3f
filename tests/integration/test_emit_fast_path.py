"""MemoryManager.emit: one encode, no task per recipient, same delivery as python-socketio."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.harness import Recorder, RunningServer, make_token


async def two_clients(
    server: RunningServer, recorders: Callable[[], Recorder]
) -> tuple[Recorder, Recorder, str, str]:
    a, b = recorders(), recorders()
    await a.connect(server.url, make_token("alice"))
    await b.connect(server.url, make_token("bob"))
    sid_a = (await a.wait_event("session"))["sid"]
    sid_b = (await b.wait_event("session"))["sid"]
    return a, b, sid_a, sid_b


def received(rec: Recorder, event: str) -> list[Any]:
    return [data for name, data in rec.events if name == event]


async def test_room_emit_reaches_every_member_and_honours_skip_sid(
    server: RunningServer, recorders: Callable[[], Recorder]
) -> None:
    sio = server.app.runtime.sio
    a, b, sid_a, sid_b = await two_clients(server, recorders)
    await sio.enter_room(sid_a, "lobby")
    await sio.enter_room(sid_b, "lobby")
    await sio.emit("token", {"request_id": "r", "seq": 0, "content": 'é\n"x"'}, to="lobby")
    await sio.emit(
        "token", {"request_id": "r", "seq": 1, "content": "b"}, to="lobby", skip_sid=sid_a
    )
    await sio.emit("token", {"request_id": "r", "seq": 2, "content": "c"}, to="nobody-here")
    await sio.emit("done", {"request_id": "r"}, to="lobby")
    await a.wait_event("done")
    await b.wait_event("done")
    assert [t["seq"] for t in received(a, "token")] == [0]
    assert [t["seq"] for t in received(b, "token")] == [0, 1]
    assert received(a, "token")[0]["content"] == 'é\n"x"'


async def test_other_payloads_take_python_socketios_path(
    server: RunningServer, recorders: Callable[[], Recorder]
) -> None:
    sio = server.app.runtime.sio
    a, _b, sid_a, _sid_b = await two_clients(server, recorders)
    await sio.emit("probe", ["a", 1], to=sid_a)
    await sio.emit("probe", {"blob": b"\x00\x01"}, to=sid_a)
    await sio.emit("probe", {"big": 1 << 70}, to=sid_a)
    await sio.emit("probe", "plain", to=sid_a)
    await a.wait_for(lambda e, d: e == "probe" and d == "plain")
    assert received(a, "probe") == [["a", 1], {"blob": b"\x00\x01"}, {"big": 1 << 70}, "plain"]


async def test_a_tailing_client_is_skipped_for_that_request_only(
    server: RunningServer, recorders: Callable[[], Recorder]
) -> None:
    runtime = server.app.runtime
    sio, tails = runtime.sio, runtime.sio_events.tails
    a, _b, sid_a, _sid_b = await two_clients(server, recorders)
    tails.add("fed-from-log", None, sid_a)
    try:
        await sio.emit("token", {"request_id": "fed-from-log", "seq": 0, "content": "x"}, to=sid_a)
        await sio.emit("token", {"request_id": "live", "seq": 0, "content": "y"}, to=sid_a)
        await a.wait_for(lambda e, d: e == "token" and d["request_id"] == "live")
    finally:
        tails.forget("fed-from-log", None)
    assert [t["request_id"] for t in received(a, "token")] == ["live"]
