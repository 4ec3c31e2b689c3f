"""Several pub/sub messages in one Redis PUBLISH: the batch a node sends, and its unpacking.

python-socketio 5.18.1's ``AsyncPubSubManager`` publishes one JSON object per message
(``{"method": "emit", ...}``) and its ``_thread`` dispatches on ``method``, ignoring a
method it does not know.  A batch is one more such object::

    {"method": "batch", "host_id": "<sender>", "messages": [<message>, ...]}

holding python-socketio's messages unchanged, in the order they were published.
``RedisManager._listen`` (socketio_managers.py) unpacks it and hands the messages on one
by one, as if each had come alone; a single message (from a node that does not batch, or
a batch of one) is handed on as before.  A node skips its own batches without decoding
them (Redis sends a subscriber its own publishes too).  A node older than this ignores a
batch (unknown ``method``), so during a rolling upgrade the new nodes run with
``PUBSUB_FLUSH_MS=0`` (single messages only) until every node reads batches.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["BATCH_PREFIX", "pack", "sender_prefix", "unpack"]

BATCH_PREFIX = b'{"method":"batch","host_id":"'


def sender_prefix(host_id: str) -> bytes:
    """How every batch of ``host_id`` begins."""
    return BATCH_PREFIX + host_id.encode() + b'"'


def pack(host_id: str, parts: list[bytes]) -> bytes:
    """One batch of JSON-encoded messages, in order."""
    return b"".join((sender_prefix(host_id), b',"messages":[', b",".join(parts), b"]}"))


def unpack(raw: bytes) -> list[dict[str, Any]]:
    """The messages of a batch (``raw`` starts with ``BATCH_PREFIX``); a malformed one or
    a malformed message in it is left out (python-socketio ignores what it cannot read)."""
    try:
        batch = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    messages = batch.get("messages") if isinstance(batch, dict) else None
    if not isinstance(messages, list):
        return []
    return [m for m in messages if isinstance(m, dict) and "method" in m]
