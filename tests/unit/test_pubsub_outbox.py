"""The cross-node outbox: order kept while Redis is out; a message given up ends its
stream for the other nodes with one ``unavailable`` error and nothing after it."""

from __future__ import annotations

import asyncio
from typing import Any

from events.transport.internals.pubsub_outbox import Outbox, stream_of


def token(request_id: str, seq: int, room: str = "lobby") -> dict[str, Any]:
    data = {"request_id": request_id, "room": room, "seq": seq, "content": "x"}
    return {"method": "emit", "event": "token", "data": [data], "room": f"r:{room}"}


class FlakyRedis:
    def __init__(self) -> None:
        self.up = False
        self.published: list[dict[str, Any]] = []

    async def publish(self, message: dict[str, Any]) -> None:
        if not self.up:
            raise ConnectionError("down")
        self.published.append(message)


async def wait_until(predicate: Any, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_messages_wait_in_order_and_go_once_redis_is_back() -> None:
    redis = FlakyRedis()
    outbox = Outbox(redis.publish, max_age_s=10, retry_s=0.05)
    for seq in range(5):
        outbox.add(token("a", seq))
    await asyncio.sleep(0.1)
    assert redis.published == []
    redis.up = True
    await wait_until(lambda: not outbox.holding)
    assert [m["data"][0]["seq"] for m in redis.published] == [0, 1, 2, 3, 4]
    await outbox.aclose()


async def test_a_message_given_up_ends_its_stream_with_one_error() -> None:
    redis = FlakyRedis()
    outbox = Outbox(redis.publish, max_age_s=0.1, retry_s=0.05)
    outbox.add(token("a", 0))
    outbox.add(token("b", 0, room="other"))
    await asyncio.sleep(0.2)
    outbox.add(token("a", 1))  # expires the old ones: "a" and "b" are lost
    outbox.add(token("c", 0))
    redis.up = True
    await wait_until(lambda: not outbox.holding)
    outbox.add(token("a", 2))  # after its end: never sent
    await asyncio.sleep(0.05)
    events = [(m["event"], stream_of(m)) for m in redis.published]
    assert ("error", ("lobby", "a")) in events
    assert ("error", ("other", "b")) in events
    assert ("token", ("lobby", "c")) in events
    assert [e for e in events if e[1] == ("lobby", "a")] == [("error", ("lobby", "a"))]
    error = next(m for m in redis.published if m["event"] == "error")
    assert error["data"][0]["code"] == "unavailable"
    assert outbox.ended(("lobby", "a"))
    await outbox.aclose()
