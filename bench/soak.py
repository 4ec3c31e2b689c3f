"""Soak test: many short chats, cancels and disconnects against a real server, bounded.

    python bench/soak.py                      # 120 s, 16 concurrent clients
    python bench/soak.py --duration 30 --concurrency 8

This process runs the upstream test double and the server (real uvicorn on a loopback
port); the clients run in a child process, so the server's numbers are its own.  It
prints the server's state before and after (memory, tasks, connections, generations,
stream-log entries) and exits 1 unless everything is back to where it started.
Only loopback addresses are used; the run stops by itself after ``--duration``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

USER_MSG = [{"role": "user", "content": "Say hello"}]
TASK_SLACK = 5  # tasks of the server's own machinery may differ by a few (timers)
# RSS keeps the allocator's high-water mark (freed memory is mostly not returned to the
# OS), so it is reported with a loose bound; Python's live allocated blocks are the leak
# check.  Engine.IO keeps a closed session's ping timer (and so the session) for up to
# PING_INTERVAL_S, so the final numbers are taken after that.
RSS_SLACK_MB = 128
BLOCKS_SLACK = 0.10
PING_INTERVAL_S = 25


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def snapshot(app: Any) -> dict[str, Any]:
    gc.collect()
    rt = app.runtime
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    return {
        "rss_mb": rss_mb(),
        "py_blocks_k": round(sys.getallocatedblocks() / 1000),
        "tasks": len(tasks),
        "connections": len(rt.connections),
        "engineio_sessions": len(rt.sio.eio.sockets),
        "generations": len(rt.registry),
        "stream_log": await rt.log.size(),
        "tails": len(rt.sio_events.tails._sids),
    }


# --- the client side (child process) -------------------------------------------------


async def one_round(url: str, token: str, stats: Counter[str], n: int) -> None:
    import aiohttp
    import socketio

    action = random.choice(["chat", "chat", "cancel", "leave", "drop", "raw", "polling"])
    rid = f"s{n}"
    if action == "raw":
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(
                f"{url}/websockets/openrouter", headers={"Authorization": f"Bearer {token}"}
            )
            await ws.send_str(json.dumps({"request_id": rid, "messages": USER_MSG}))
            async for msg in ws:
                frame = json.loads(msg.data)
                if frame["type"] in ("done", "error"):
                    stats[f"raw_{frame['type']}"] += 1
                    break
            await ws.close()
        return
    client = socketio.AsyncClient(reconnection=False)
    ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    first: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @client.on("token")  # type: ignore[misc]
    async def _token(data: Any) -> None:
        if not first.done():
            first.set_result(None)

    @client.on("done")  # type: ignore[misc]
    async def _done(data: Any) -> None:
        if not ended.done():
            ended.set_result(data["finish_reason"])

    @client.on("error")  # type: ignore[misc]
    async def _error(data: Any) -> None:
        if not ended.done():
            ended.set_result(data["code"])

    transports = ["polling", "websocket"] if action == "polling" else ["websocket"]
    await client.connect(url, auth={"token": token}, transports=transports, wait_timeout=10)
    model = "double/normal" if action in ("chat", "polling") else "double/slow"
    ack = await client.call(
        "chat", {"request_id": rid, "messages": USER_MSG, "model": model}, timeout=10
    )
    if not ack.get("ok"):
        stats[f"refused_{ack['error']['code']}"] += 1
        await client.disconnect()
        return
    if action in ("chat", "polling"):
        stats[f"{action}_{await asyncio.wait_for(ended, 30)}"] += 1
    elif action == "cancel":
        await asyncio.wait_for(first, 10)
        await client.call("cancel", {"request_id": rid}, timeout=10)
        stats[f"cancel_{await asyncio.wait_for(ended, 10)}"] += 1
    elif action == "leave":
        await asyncio.wait_for(first, 10)
        stats["leave_mid_stream"] += 1
    else:  # drop: lose the transport without a disconnect packet
        await asyncio.wait_for(first, 10)
        if client.eio.ws is not None:
            await client.eio.ws.close()
        stats["drop_mid_stream"] += 1
    if client.connected:
        await client.disconnect()


async def run_clients(url: str, token: str, duration: float, concurrency: int) -> None:
    stats: Counter[str] = Counter()
    deadline = time.monotonic() + duration
    counter = iter(range(10**9))

    async def worker() -> None:
        while time.monotonic() < deadline:
            try:
                await one_round(url, token, stats, next(counter))
            except Exception as exc:
                stats[f"client_error_{type(exc).__name__}"] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    print(json.dumps(dict(sorted(stats.items()))))


# --- the server side -----------------------------------------------------------------


async def soak(duration: float, concurrency: int) -> int:
    from tests.harness import base_settings, make_token, run_server
    from tests.upstream_double import UpstreamDouble

    async with UpstreamDouble() as upstream:
        settings = base_settings(
            upstream.base_url,
            resume_grace_s=1,
            resume_retention_s=2,
            rate_limit_per_minute=1_000_000,
            max_connections_per_user=10_000,
            max_streams_per_user=10_000,
        )
        async with run_server(settings) as server:
            await asyncio.sleep(0.5)
            before = await snapshot(server.app)
            token = make_token("soak", ttl=duration + 600)
            started = time.monotonic()
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--clients",
                server.url,
                "--token",
                token,
                "--duration",
                str(duration),
                "--concurrency",
                str(concurrency),
                stdout=asyncio.subprocess.PIPE,
            )
            peak = dict(before)
            requests = closed = 0

            def forget_ended() -> None:
                # The double records every request; drop finished ones so its memory
                # does not count as the server's.
                nonlocal requests, closed
                ended = sum(1 for r in upstream.requests if r.ended)
                requests += ended
                closed += ended
                upstream.requests[:] = [r for r in upstream.requests if not r.ended]

            while child.returncode is None:
                try:
                    await asyncio.wait_for(child.wait(), 2)
                except TimeoutError:
                    forget_ended()
                    now = await snapshot(server.app)
                    peak = {k: max(peak[k], now[k]) for k in peak}
            assert child.stdout is not None
            client_stats = json.loads((await child.stdout.read()).decode() or "{}")
            ran = time.monotonic() - started
            # Lost transports keep streams for RESUME_GRACE_S; the log keeps finished
            # streams for RESUME_RETENTION_S; ping timers live PING_INTERVAL_S.  Wait
            # those out, then compare.
            settle = settings.resume_grace_s + settings.resume_retention_s
            await asyncio.sleep(max(settle, PING_INTERVAL_S) + 1)
            after = await snapshot(server.app)
            for _ in range(20):
                if back_to_baseline(before, after):
                    break
                await asyncio.sleep(0.5)
                after = await snapshot(server.app)
            forget_ended()
            requests += len(upstream.requests)  # any still open count as not closed
    print(f"soak: {ran:.0f} s, {concurrency} clients, {requests} upstream requests")
    print("client outcomes:", json.dumps(client_stats, indent=None))
    print(f"upstream requests ended: {closed}/{requests}")
    print(f"{'':20}{'before':>10}{'peak':>10}{'after':>10}")
    for key in before:
        print(f"{key:20}{before[key]:>10}{peak[key]:>10}{after[key]:>10}")
    ok = back_to_baseline(before, after) and closed == requests
    print("result:", "OK: back to baseline" if ok else "LEAK")
    return 0 if ok else 1


def back_to_baseline(before: dict[str, Any], after: dict[str, Any]) -> bool:
    zero = ("connections", "engineio_sessions", "generations", "stream_log", "tails")
    return (
        all(after[k] == 0 for k in zero)
        and after["tasks"] <= before["tasks"] + TASK_SLACK
        and after["py_blocks_k"] <= before["py_blocks_k"] * (1 + BLOCKS_SLACK)
        and after["rss_mb"] <= before["rss_mb"] + RSS_SLACK_MB
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--clients", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clients:
        asyncio.run(run_clients(args.clients, args.token, args.duration, args.concurrency))
        return 0
    return asyncio.run(soak(args.duration, args.concurrency))


if __name__ == "__main__":
    raise SystemExit(main())
