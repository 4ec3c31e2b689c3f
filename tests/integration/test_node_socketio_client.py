"""The official JavaScript `socket.io-client` (Node) against the real server."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.harness import RunningServer, make_token
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import NORMAL_TEXT

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "node" / "chat_probe.mjs"

pytestmark = pytest.mark.node


def require_node() -> str:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "socket.io-client").is_dir():
        pytest.fail("Node.js and node_modules/socket.io-client are required (run `make install`)")
    return node


async def run_probe(options: dict[str, Any], probe: Path = PROBE) -> list[tuple[str, Any]]:
    """Run a Node probe script; its stdout is one JSON event per line."""
    proc = await asyncio.create_subprocess_exec(
        require_node(),
        str(probe),
        json.dumps(options),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    lines = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    return [(line["event"], line["data"]) for line in lines]


async def test_node_client_streams_a_chat(server: RunningServer) -> None:
    events = await run_probe(
        {
            "url": server.url,
            "token": make_token("alice", name="Alice"),
            "chats": [
                {
                    "request_id": "n1",
                    "model": "double/normal",
                    "messages": [{"role": "user", "content": "hi"}],
                }
            ],
        }
    )
    names = [e for e, _ in events]
    assert names[0] == "session"
    assert ("chat_ack", {"ok": True, "request_id": "n1"}) in events
    stream = [
        (e, d)
        for e, d in events
        if isinstance(d, dict) and d.get("request_id") == "n1" and e in ("token", "done", "error")
    ]
    assert [d["seq"] for e, d in stream if e == "token"] == list(range(len(stream) - 1))
    assert "".join(d["content"] for e, d in stream if e == "token") == NORMAL_TEXT
    assert stream[-1][0] == "done"
    assert stream[-1][1]["usage"]["total_tokens"] > 0


async def test_node_client_refused_without_token(server: RunningServer) -> None:
    events = await run_probe({"url": server.url, "token": None, "chats": []})
    assert events == [
        (
            "connect_error",
            {
                "message": "unauthorized",
                "data": {"code": "unauthorized", "message": events[0][1]["data"]["message"]},
            },
        )
    ]


async def test_node_client_cancel_and_polling_transport(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    events = await run_probe(
        {
            "url": server.url,
            "token": make_token("alice"),
            "transports": ["polling"],
            "cancelAfterTokens": 2,
            "chats": [
                {
                    "request_id": "c1",
                    "model": "double/slow",
                    "messages": [{"role": "user", "content": "hi"}],
                }
            ],
        }
    )
    assert ("cancel_ack", {"ok": True}) in events
    done = [d for e, d in events if e == "done"]
    assert done[0]["finish_reason"] == "cancelled"
    recorded = upstream.requests[-1]
    await upstream.wait_closed(recorded, timeout=2)
    assert recorded.closed_by_client


async def test_node_client_disconnect_closes_upstream_at_once(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    events = await run_probe(
        {
            "url": server.url,
            "token": make_token("alice"),
            "disconnectAfterTokens": 2,
            "chats": [
                {
                    "request_id": "d1",
                    "model": "double/slow",
                    "messages": [{"role": "user", "content": "hi"}],
                }
            ],
        }
    )
    assert ("client_disconnect", None) in events
    recorded = upstream.requests[-1]
    await upstream.wait_closed(recorded, timeout=1)
    assert recorded.closed_by_client
