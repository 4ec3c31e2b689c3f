"""The cross-node outbox: messages coalesced into batches without holding back what a
reader waits for; order kept while Redis is out; a message given up ends its stream for
the other nodes with one ``unavailable`` error and nothing after it."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from events.transport.internals import pubsub_batch
from events.transport.internals.pubsub_outbox import Outbox, stream_of

HOUR = 3600.0  # a window nothing waits out in a test


def token(request_id: str, seq: int, room: str = "lobby", event: str = "token") -> dict[str, Any]:
    data = {"request_id": request_id, "room": room, "seq": seq, "content": "x"}
    return {"method": "emit", "event": event, "data": [data], "room": f"r:{room}"}


def done(request_id: str, room: str = "lobby") -> dict[str, Any]:
    data = {"request_id": request_id, "room": room, "finish_reason": "stop", "last_seq": 3}
    return {"method": "emit", "event": "done", "data": [data], "room": f"r:{room}"}


class FlakyRedis:
    """Stands in for Redis: takes a batch (one command) when up, else raises."""

    def __init__(self, up: bool = False) -> None:
        self.up = up
        self.batches: list[list[dict[str, Any]]] = []

    async def publish(self, parts: list[bytes]) -> None:
        if not self.up:
            raise ConnectionError("down")
        self.batches.append([orjson.loads(part) for part in parts])

    @property
    def published(self) -> list[dict[str, Any]]:
        return [message for batch in self.batches for message in batch]


def outbox_for(redis: FlakyRedis, **options: Any) -> Outbox:
    options.setdefault("retry_s", 0.05)
    return Outbox(redis.publish, orjson.dumps, **options)


def seqs(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(m["event"], m["data"][0].get("seq")) for m in messages]


async def wait_until(predicate: Any, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_messages_wait_in_order_and_go_once_redis_is_back() -> None:
    redis = FlakyRedis()
    outbox = outbox_for(redis, max_age_s=10)
    for seq in range(5):
        outbox.add(token("a", seq))
    await wait_until(lambda: outbox.holding)
    assert redis.published == []
    redis.up = True
    await wait_until(lambda: not outbox.holding and not len(outbox))
    assert [m["data"][0]["seq"] for m in redis.published] == [0, 1, 2, 3, 4]
    await outbox.aclose()


async def test_a_message_given_up_ends_its_stream_with_one_error() -> None:
    redis = FlakyRedis()
    outbox = outbox_for(redis, max_age_s=0.1)
    outbox.add(token("a", 0))
    outbox.add(token("b", 0, room="other"))  # one batch, two streams
    await wait_until(lambda: outbox.given_up == 2)  # too old: "a" and "b" are lost
    outbox.add(token("a", 1))  # after the gap: its error ends it instead
    outbox.add(token("c", 0))
    redis.up = True
    await wait_until(lambda: not outbox.holding and not len(outbox))
    outbox.add(token("a", 2))  # after its end: never sent
    await asyncio.sleep(0.05)
    events = [(m.get("event"), stream_of(m)) for m in redis.published]
    assert ("error", ("lobby", "a")) in events
    assert ("error", ("other", "b")) in events
    assert ("token", ("lobby", "c")) in events
    assert [e for e in events if e[1] == ("lobby", "a")] == [("error", ("lobby", "a"))]
    error = next(m for m in redis.published if m.get("event") == "error")
    assert error["data"][0]["code"] == "unavailable"
    assert outbox.ended(("lobby", "a"))
    assert outbox.given_up == 2
    await outbox.aclose()


async def test_a_window_gathers_a_streams_events_into_one_batch() -> None:
    redis = FlakyRedis(up=True)
    outbox = outbox_for(redis, flush_s=HOUR)
    outbox.add(token("a", 0))  # the first event goes at once
    await wait_until(lambda: len(redis.batches) == 1)
    for seq in range(1, 4):
        outbox.add(token("a", seq))
    outbox.add(token("b", 1, room="other"))
    await asyncio.sleep(0.1)
    assert len(redis.batches) == 1, "events in the middle of a stream wait for the window"
    outbox.add(done("a"))  # a terminal event takes them along, at once
    await wait_until(lambda: len(redis.batches) == 2)
    assert seqs(redis.batches[0]) == [("token", 0)]
    assert seqs(redis.batches[1]) == [
        ("token", 1),
        ("token", 2),
        ("token", 3),
        ("token", 1),
        ("done", None),
    ]
    assert [stream_of(m) for m in redis.batches[1]][-2:] == [("other", "b"), ("lobby", "a")]
    await outbox.aclose()


@pytest.mark.parametrize(
    "message",
    [
        {"method": "enter_room", "sid": "s1", "room": "lobby", "namespace": "/"},
        {"method": "emit", "event": "presence", "data": [{"room": "lobby", "members": []}]},
        token("a", 0, event="reasoning"),
        token("a", 5, event="error"),
    ],
    ids=["python-socketio's own", "not a stream event", "first event", "terminal"],
)
async def test_what_a_reader_waits_for_is_never_held(message: dict[str, Any]) -> None:
    redis = FlakyRedis(up=True)
    outbox = outbox_for(redis, flush_s=HOUR)
    outbox.add(message)
    await wait_until(lambda: redis.published == [message])
    await outbox.aclose()


async def test_a_window_elapses_and_batches_stay_under_the_size_cap() -> None:
    redis = FlakyRedis(up=True)
    one = len(orjson.dumps(token("a", 1)))
    outbox = outbox_for(redis, flush_s=0.001, max_batch_bytes=3 * one)
    for seq in range(1, 8):
        outbox.add(token("a", seq))
    await wait_until(lambda: len(redis.published) == 7)
    assert [m["data"][0]["seq"] for m in redis.published] == list(range(1, 8))
    assert max(len(batch) for batch in redis.batches) <= 3
    await outbox.aclose()


async def test_waiting_out_a_window_is_not_waiting_for_redis() -> None:
    redis = FlakyRedis(up=True)
    outbox = outbox_for(redis, flush_s=1.0, max_age_s=0.5)  # a window longer than the age
    outbox.add(token("a", 1))
    await wait_until(lambda: redis.published)
    assert seqs(redis.published) == [("token", 1)]
    assert outbox.given_up == 0
    await outbox.aclose()


async def test_closing_publishes_what_waits() -> None:
    redis = FlakyRedis(up=True)
    outbox = outbox_for(redis, flush_s=HOUR)
    outbox.add(token("a", 0))
    outbox.add(token("a", 1))
    await outbox.aclose(flush_timeout_s=5)
    assert seqs(redis.published) == [("token", 0), ("token", 1)]


def test_a_batch_unpacks_to_its_messages_in_order() -> None:
    messages = [token("a", 0), {"method": "enter_room", "sid": "s", "room": "x"}, done("a")]
    raw = pubsub_batch.pack("host1", [orjson.dumps(m) for m in messages])
    assert raw.startswith(pubsub_batch.BATCH_PREFIX)
    assert raw.startswith(pubsub_batch.sender_prefix("host1"))
    assert not raw.startswith(pubsub_batch.sender_prefix("host2"))
    assert orjson.loads(raw)["host_id"] == "host1"
    assert pubsub_batch.unpack(raw) == messages
    assert pubsub_batch.unpack(pubsub_batch.BATCH_PREFIX + b"cut") == []
    assert pubsub_batch.unpack(b'{"method":"batch","host_id":"h","messages":7}') == []
    assert pubsub_batch.unpack(b'{"method":"batch","messages":[1,{"x":1},{"method":"m"}]}') == [
        {"method": "m"}
    ]
