"""Hostile input: random and malformed payloads, broken packets, floods and slow lorises.

One real server (module scope) takes all of it.  Every hostile input must be answered
with an error (never ``internal``) or a clean close; a well-behaved client keeps being
served throughout; and at the end the server holds no streams or connections, its
task count is back within ``TASK_SLACK`` of where it started (engine.io's ping timers
aside, which end within one ping interval), and RSS grew by less than ``RSS_BOUND_MB``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.core.errors import ErrorCode
from events.transport.internals.socketio_server import MAX_QUEUED_PACKETS
from tests.harness import Recorder, RunningServer, base_settings, make_token, run_server
from tests.upstream_double import UpstreamDouble

CODES = {code.value for code in ErrorCode}
EVENTS = ["chat", "cancel", "join", "leave", "resume", "refresh"]
TASK_SLACK = 10
RSS_BOUND_MB = 150
JOIN_FLOOD = 100_000
MAX_FRAME = 1_000_000

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240)]
HYPOTHESIS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def server_tasks() -> list[asyncio.Task[Any]]:
    """Live tasks, less engine.io's ping timers (each ends within ping_interval)."""
    current = asyncio.current_task()
    return [
        t
        for t in asyncio.all_tasks()
        if t is not current and "_send_ping" not in repr(t.get_coro())
    ]


class Hostile:
    """The shared server plus the numbers taken before the first hostile input."""

    def __init__(self, server: RunningServer, upstream: UpstreamDouble) -> None:
        self.server = server
        self.upstream = upstream
        self.http: aiohttp.ClientSession = aiohttp.ClientSession()
        self.tasks_before = 0
        self.rss_before = 0.0
        self.ids = itertools.count(1)

    @property
    def runtime(self) -> Any:
        return self.server.app.runtime


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def hostile() -> AsyncIterator[Hostile]:
    async with UpstreamDouble() as upstream:
        config = base_settings(
            upstream.base_url,
            max_frame_bytes=MAX_FRAME,
            max_payload_bytes=200_000,
            rate_limit_per_minute=100_000,
            max_connections_per_user=10_000,
            http_header_timeout_s=1,
            connect_timeout_s=1,
        )
        async with run_server(config) as server:
            state = Hostile(server, upstream)
            await asyncio.sleep(0.2)
            state.tasks_before = len(server_tasks())
            state.rss_before = rss_mb()
            try:
                yield state
            finally:
                await state.http.close()


# --- a raw Socket.IO client: sends exactly the bytes it is given ----------------------


class RawSio:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, eio_sid: str = "") -> None:
        self.ws = ws
        self.eio_sid = eio_sid
        self.acks: dict[int, asyncio.Future[Any]] = {}
        self.events: list[Any] = []
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, state: Hostile, user: str = "mallory") -> RawSio:
        ws = await state.http.ws_connect(f"{state.server.url}/socket.io/?EIO=4&transport=websocket")
        opened = await ws.receive(timeout=10)
        assert opened.data.startswith("0{")
        await ws.send_str("40" + json.dumps({"token": make_token(user)}))
        connected = await ws.receive(timeout=10)
        assert connected.data.startswith("40{"), connected.data
        return cls(ws, json.loads(opened.data[1:])["sid"])

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = msg.data
                if data == "2":
                    await self.ws.send_str("3")
                elif data.startswith("43"):
                    digits = "".join(itertools.takewhile(str.isdigit, data[2:]))
                    future = self.acks.pop(int(digits), None)
                    if future is not None and not future.done():
                        future.set_result(json.loads(data[2 + len(digits) :])[0])
                elif data.startswith("42"):
                    self.events.append(json.loads(data[2:]))
                elif data == "1":
                    break  # engine.io close
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            for future in self.acks.values():
                if not future.done():
                    future.set_result(None)

    async def call_raw(
        self, ack_id: int, event: str, payload_json: str, timeout: float = 15
    ) -> Any:
        """Send ``42<id>["event",<payload_json>]``; the ack, or None if the server closed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks[ack_id] = future
        if self.closed.is_set():
            return None
        await self.ws.send_str(f'42{ack_id}["{event}",{payload_json}]')
        return await asyncio.wait_for(future, timeout)

    async def send(self, text: str | bytes) -> None:
        if isinstance(text, bytes):
            await self.ws.send_bytes(text)
        else:
            await self.ws.send_str(text)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


def assert_error_answer(ack: Any) -> None:
    assert isinstance(ack, dict), ack
    assert isinstance(ack.get("ok"), bool), ack
    if ack["ok"]:
        return
    error = ack["error"]
    assert error["code"] in CODES, ack
    assert error["code"] != "internal", ack
    assert isinstance(error["message"], str)
    assert isinstance(error["retryable"], bool)


async def assert_still_serving(state: Hostile) -> None:
    """A well-behaved client connects and gets a whole answer."""
    rec = Recorder()
    await rec.connect(state.server.url, make_token("alice"))
    rid = f"ok{next(state.ids)}"
    ack = await rec.call(
        "chat", {"request_id": rid, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert ack == {"ok": True, "request_id": rid}
    event, done = await rec.terminal(rid, timeout=20)
    assert event == "done", done
    await rec.close()


# --- strategies ---------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["", "lobby", "_reserved", "a" * 65, "req-1", "double/normal"])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=25,
)
FIELDS = {
    "chat": ["request_id", "messages", "model", "models", "temperature", "top_p",
             "max_tokens", "stop", "seed", "room"],
    "cancel": ["request_id"],
    "join": ["room"],
    "leave": ["room"],
    "resume": ["request_id", "last_seq"],
    "refresh": ["token"],
}  # fmt: skip
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", ""]) | JSON},
    optional={"content": st.text(max_size=20) | JSON, "name": JSON},
)


def near_valid(event: str) -> st.SearchStrategy[Any]:
    """Objects with the event's own field names (sometimes an unknown one), odd values."""
    values = dict.fromkeys(FIELDS[event], JSON)
    if event == "chat":
        values["messages"] = st.lists(MESSAGE, max_size=3) | JSON
    return st.fixed_dictionaries({}, optional={**values, "unknown_field": JSON})


def encode(value: Any) -> str:
    # NaN/Infinity and lone surrogates are not JSON the server accepts: fine, they are hostile.
    return json.dumps(value, allow_nan=True)


PAYLOADS = st.one_of(
    JSON.map(encode),
    st.sampled_from(EVENTS).flatmap(near_valid).map(encode),
    st.sampled_from(
        [
            "null",
            '""',
            "[" * 5000 + "]" * 5000,  # deeper than any JSON parser allows
            '{"a":' * 600 + "1" + "}" * 600,
            "1" + "0" * 400,  # a number no 64-bit type holds
            '{"request_id": 1e999}',
            '{"room": null}',
            '{"room": ""}',
            "{}",
            json.dumps({"messages": [{"role": "user", "content": [1] * 30_000}]}),
            json.dumps({f"k{i}": 0 for i in range(20_000)}),
        ]
    ),
)


# --- tests --------------------------------------------------------------------------


@given(event=st.sampled_from(EVENTS), payload=PAYLOADS)
@HYPOTHESIS
async def test_random_payloads_to_every_event_get_an_error_or_a_clean_close(
    hostile: Hostile, event: str, payload: str
) -> None:
    client = await RawSio.open(hostile)
    try:
        ack = await client.call_raw(1, event, payload)
        if ack is None:  # closed: must be a clean close, not a crash
            assert client.close_code in (1000, None), client.close_code
        else:
            assert_error_answer(ack)
            again = await client.call_raw(2, "cancel", '{"request_id": "nothing"}')
            assert again["error"]["code"] == "not_found", "the connection stays usable"
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("join", {"room": None}),
        ("join", {"room": ""}),
        ("join", {}),
        ("leave", {"room": None}),
        ("leave", {"room": ""}),
        ("chat", {"room": "", "messages": [{"role": "user", "content": "hi"}]}),
        ("chat", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2**70}),
        ("chat", {"messages": [{"role": "user", "content": [1] * 30_000}]}),
        ("cancel", {f"k{i}": 0 for i in range(20_000)}),
        ("resume", {"request_id": "r", "last_seq": 2**80}),
        ("refresh", {"token": "x" * 20_000}),
    ],
)
async def test_empty_null_and_oversized_fields_are_invalid_payload(
    hostile: Hostile, event: str, payload: Any
) -> None:
    client = await RawSio.open(hostile)
    try:
        ack = await client.call_raw(1, event, json.dumps(payload))
        assert_error_answer(ack)
        assert ack["ok"] is False
        assert ack["error"]["code"] in ("invalid_payload", "payload_too_large")
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("packet", "outcome"),
    [
        ("4abc", "close"),  # not a Socket.IO packet type
        ("42{}", "close"),  # an event that is not [name, ...]
        ("42[1]", "close"),
        ("42", "close"),
        ("4", "close"),  # empty Socket.IO packet
        ('42/nowhere,["chat",{}]', "close"),  # a namespace it has not joined
        ('451-["chat",{"_placeholder":true,"num":0}]', "close"),  # attachment never sent
        ('45-["chat"]', "close"),  # attachment count with no attachments
        ('4599999999-["chat",{}]', "close"),
        (b"\x04binary", "close"),  # a binary frame
        ("x", "close"),  # not an Engine.IO packet
        ("9", "close"),
        ("0", "close"),  # OPEN from a client
        ("bAAAA", "close"),  # base64 binary on a WebSocket
        ('40/nowhere,{"token":"x"}', "connect_error"),  # unknown namespace: CONNECT_ERROR
        ('4299["no_such_event",{}]', "ack_error"),
        ('42["connect",{}]', "ignored"),  # reserved names are ignored (§6)
    ],
)
async def test_malformed_socketio_packets(
    hostile: Hostile, packet: str | bytes, outcome: str
) -> None:
    client = await RawSio.open(hostile)
    answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    client.acks[99] = answer
    try:
        await client.send(packet)
        if outcome == "close":
            await asyncio.wait_for(client.closed.wait(), 10)
            assert client.close_code in (1000, None)
        else:
            ack = await client.call_raw(7, "cancel", '{"request_id": "nothing"}')
            assert ack["error"]["code"] == "not_found", "still usable"
        if outcome == "ack_error":
            ack = await asyncio.wait_for(answer, 5)
            assert_error_answer(ack)
            assert ack["error"]["code"] == "invalid_payload"
    finally:
        await client.close()
    await assert_still_serving(hostile)


async def test_unknown_event_with_ack_gets_invalid_payload(hostile: Hostile) -> None:
    client = await RawSio.open(hostile)
    try:
        ack = await client.call_raw(5, "no_such_event", "{}")
        assert ack["ok"] is False
        assert ack["error"]["code"] == "invalid_payload"
    finally:
        await client.close()


# --- raw WebSocket endpoint ---------------------------------------------------------


async def raw_ws(state: Hostile) -> aiohttp.ClientWebSocketResponse:
    return await state.http.ws_connect(
        f"{state.server.url}/websockets/openrouter",
        headers={"Authorization": f"Bearer {make_token('mallory')}"},
        max_msg_size=0,
    )


async def frames_until_sentinel(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]] | None:
    """Frames up to the answer to a sentinel cancel; None if the server closed."""
    await ws.send_str(json.dumps({"type": "cancel", "request_id": "sentinel"}))
    frames = []
    while True:
        msg = await ws.receive(timeout=15)
        if msg.type != aiohttp.WSMsgType.TEXT:
            return None
        frame = json.loads(msg.data)
        frames.append(frame)
        if frame.get("request_id") == "sentinel":
            return frames


@given(
    frame=st.one_of(
        PAYLOADS,
        st.sampled_from(["chat", "cancel", "resume", "refresh", "nope", ""]).flatmap(
            lambda kind: near_valid("chat" if kind not in FIELDS else kind).map(
                lambda obj, k=kind: encode({"type": k, **obj})
            )
        ),
        st.binary(max_size=64),
    )
)
@HYPOTHESIS
async def test_random_frames_on_the_raw_endpoint(hostile: Hostile, frame: str | bytes) -> None:
    ws = await raw_ws(hostile)
    try:
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_str(frame)
        frames = await frames_until_sentinel(ws)
        assert frames is not None, "the raw endpoint keeps the connection after bad input"
        for item in frames:
            assert item["type"] in ("error", "token", "done", "completion", "refreshed"), item
            if item["type"] == "error":
                assert item["code"] in CODES, item
                assert item["code"] != "internal", item
        assert frames[-1]["code"] == "not_found"
    finally:
        await ws.close()


async def test_raw_endpoint_frame_over_the_cap_closes_1009(hostile: Hostile) -> None:
    ws = await raw_ws(hostile)
    await ws.send_str("x" * (MAX_FRAME + 10))
    msg = await ws.receive(timeout=10)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 1009
    await assert_still_serving(hostile)


def masked_frame(opcode: int, payload: bytes) -> bytes:
    header = bytes([0x80 | opcode])
    length = len(payload)
    if length < 126:
        header += bytes([0x80 | length])
    else:
        header += bytes([0x80 | 126]) + length.to_bytes(2, "big")
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def raw_upgrade(
    state: Hostile, path: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", state.server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {make_token('mallory')}\r\n\r\n"
        ).encode()
    )
    status = await reader.readuntil(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 101"), status
    return reader, writer


@pytest.mark.parametrize(
    "path", ["/websockets/openrouter", "/socket.io/?EIO=4&transport=websocket"]
)
async def test_invalid_utf8_text_frame_closes_1007(hostile: Hostile, path: str) -> None:
    reader, writer = await raw_upgrade(hostile, path)
    writer.write(masked_frame(0x1, b'{"messages": "\xff\xfe\xc3("}'))
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)  # until the server closes
    close = data[data.rfind(b"\x88") :]
    assert close[:1] == b"\x88", data
    assert int.from_bytes(close[2:4], "big") == 1007
    writer.close()
    await assert_still_serving(hostile)


# --- floods and slow clients ----------------------------------------------------------


async def test_100k_pipelined_join_requests(hostile: Hostile) -> None:
    client = await RawSio.open(hostile)
    answered = 0
    start = time.monotonic()
    try:
        loop = asyncio.get_running_loop()
        futures = []
        for i in range(1, JOIN_FLOOD + 1):
            future: asyncio.Future[Any] = loop.create_future()
            client.acks[i] = future
            futures.append(future)
            await client.ws.send_str(f'42{i}["join",{{"room":"room{i % 60}"}}]')
        other = asyncio.ensure_future(assert_still_serving(hostile))
        results = await asyncio.wait_for(asyncio.gather(*futures), 180)
        await other
        for ack in results:
            if ack is None:
                break  # the server may close a flooding client: a clean close
            assert_error_answer(ack)
            answered += 1
    finally:
        await client.close()
    assert answered == JOIN_FLOOD or client.closed.is_set()
    print(f"{answered} join acks in {time.monotonic() - start:.1f}s")


async def test_client_that_never_reads_is_closed_at_the_queue_cap(hostile: Hostile) -> None:
    """Answers pile up for a client that sends but never reads: capped, then closed."""
    client = await RawSio.open(hostile)
    client._reader.cancel()  # stop reading: kernel buffers fill, then the server's queue
    sock = hostile.runtime.sio.eio.sockets[client.eio_sid]
    bad_chat = json.dumps({"messages": [], "unknown": "x" * 200})
    highest = 0
    try:
        for i in range(200_000):
            if sock.closed:
                break
            await client.ws.send_str(f'42{i}["chat",{bad_chat}]')
            if i % 500 == 0:
                highest = max(highest, sock.queue.qsize())
                await asyncio.sleep(0)
        assert sock.closed, f"never closed; queue at {sock.queue.qsize()}"
        assert max(highest, sock.queue.qsize()) <= MAX_QUEUED_PACKETS + 3
    finally:
        await client.ws.close()
    await assert_still_serving(hostile)


async def test_slow_loris_clients_are_closed_and_others_served(hostile: Hostile) -> None:
    writers = []
    # HTTP: headers that never finish; a WebSocket upgrade that never finishes.
    for i in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", hostile.server.port)
        partial = b"GET /health HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"GET /socket.io/?EIO=4"
        writer.write(partial)
        writers.append((reader, writer))
    # Engine.IO: a session that answers pings but never sends the Socket.IO connect.
    eio = await hostile.http.ws_connect(
        f"{hostile.server.url}/socket.io/?EIO=4&transport=websocket"
    )
    assert (await eio.receive(timeout=10)).data.startswith("0{")
    await assert_still_serving(hostile)
    for reader, _writer in writers:
        assert await asyncio.wait_for(reader.read(), 10) in (b"", b"HTTP/1.1 408")
    msg = await eio.receive(timeout=10)
    while msg.type == aiohttp.WSMsgType.TEXT:
        msg = await eio.receive(timeout=10)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    for _reader, writer in writers:
        writer.close()
    await eio.close()


async def test_zz_server_state_returns_to_its_bounds(hostile: Hostile) -> None:
    """Last in the module: nothing the hostile clients did is still held."""
    await assert_still_serving(hostile)
    runtime = hostile.runtime
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (
            len(runtime.registry) == 0
            and len(runtime.connections) == 0
            and not runtime.sio.eio.sockets
            and len(server_tasks()) <= hostile.tasks_before + TASK_SLACK
        ):
            break
        await asyncio.sleep(0.2)
    assert len(runtime.registry) == 0
    assert len(runtime.connections) == 0
    assert not runtime.sio.eio.sockets
    tasks = server_tasks()
    assert len(tasks) <= hostile.tasks_before + TASK_SLACK, [repr(t.get_coro()) for t in tasks]
    grown = rss_mb() - hostile.rss_before
    print(f"tasks {hostile.tasks_before} -> {len(tasks)}, RSS +{grown:.0f} MB")
    assert grown < RSS_BOUND_MB
