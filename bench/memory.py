"""``python -m bench.memory``: where the bytes of an idle connection go (tracemalloc).

Runs our server in this process under ``tracemalloc``, started the way ``python -m server``
starts it (``--command module``: ``server.serve.uvicorn_server``) or the way
``uvicorn server.main:app`` does (``--command uvicorn``: uvicorn's own ``Config`` importing
``server.main``), optionally with ``--redis URL``.  The Node load generator (another process,
so its allocations are not counted) opens N idle Socket.IO connections; the allocations that
grew between a snapshot before and one with every connection open are printed per
connection, grouped by file:line (``--group lineno``), by file, or by traceback.

RSS grows by more than tracemalloc sees: memory that C code allocates with ``malloc``
(uvloop's transports, zlib, OpenSSL) is not traced, so a gap between "RSS / connection" and
"traced / connection" points there.  Traced figures include tracemalloc's own overhead in
RSS, so compare RSS with ``make bench``'s idle scenario, not this tool.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import tempfile
import tracemalloc
from collections.abc import Sequence
from typing import Any

import uvicorn

from bench.procs import LoadRun, free_port, rss_kb
from bench.run import LOAD, ROOT, load_config
from bench.scenarios import Scenario

IGNORE = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--command", choices=("module", "uvicorn"), default="module")
    parser.add_argument("--redis", metavar="URL", help="REDIS_URL for the server")
    parser.add_argument("--group", choices=("lineno", "filename", "traceback"), default="lineno")
    parser.add_argument("--frames", type=int, default=1, help="frames kept per allocation")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--hold", type=float, default=2.0, help="seconds held before the snapshot")
    return parser.parse_args(argv)


def server_environment(port: int, secret: str, workdir: str, redis_url: str | None) -> None:
    """The environment both start commands read their settings from (this tool only)."""
    os.environ.update(
        {
            "JWT_SECRET": secret,
            "OPENROUTER_API_KEY": "bench-key",
            "OPENROUTER_BASE_URL": "http://127.0.0.1:9/v1",  # idle: never called
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "LOG_LEVEL": "warning",
            "DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/relay.db",
        }
    )
    if redis_url:
        os.environ["REDIS_URL"] = redis_url


def build_server(command: str, port: int) -> uvicorn.Server:
    if command == "uvicorn":  # what `uvicorn server.main:app --host … --port …` builds
        return uvicorn.Server(uvicorn.Config("server.main:app", host="127.0.0.1", port=port))
    from server.app import create_app
    from server.serve import tune_gc, uvicorn_server
    from server.settings import Settings

    settings = Settings()
    server = uvicorn_server(settings, create_app(settings))
    tune_gc()
    return server


async def open_idle(url: str, secret: str, clients: int, hold_s: float) -> LoadRun:
    """Node clients connected and idle; the caller sends "stop" and closes the run."""
    scenario = Scenario("idle", clients=clients, hold_s=hold_s, timeout_s=120)
    load = await LoadRun.start(LOAD, load_config(scenario, [url], secret), ROOT)
    ready = await load.read(scenario.timeout_s)
    if ready.get("failed"):
        print(f"warning: {ready['failed']} connections failed")
    await asyncio.sleep(hold_s)
    return load


async def close_idle(load: LoadRun) -> None:
    await load.send("stop")
    await load.read(30)
    await load.close()


def snapshot() -> tracemalloc.Snapshot:
    gc.collect()
    return tracemalloc.take_snapshot().filter_traces(IGNORE)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    port, secret = free_port(), secrets.token_urlsafe(32)
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as workdir:
        server_environment(port, secret, workdir, args.redis)
        tracemalloc.start(args.frames)
        server = build_server(args.command, port)
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                serving.result()  # raises what stopped it
            await asyncio.sleep(0.05)
        try:
            await close_idle(await open_idle(url, secret, 20, 0.2))  # warm-up
            await asyncio.sleep(0.5)
            before, rss_before = snapshot(), rss_kb(os.getpid())
            load = await open_idle(url, secret, args.connections, args.hold)
            after, rss_after = snapshot(), rss_kb(os.getpid())
            await close_idle(load)
        finally:
            server.should_exit = True
            await serving
    stats = after.compare_to(before, args.group)
    return {"stats": stats, "rss_kb": rss_after - rss_before}


def report(args: argparse.Namespace, measured: dict[str, Any]) -> str:
    n = args.connections
    stats: list[tracemalloc.StatisticDiff] = measured["stats"]
    traced = sum(s.size_diff for s in stats)
    lines = [
        f"{args.command}{' + Redis' if args.redis else ''}, {n} idle connections:"
        f" RSS {measured['rss_kb'] / n:.1f} KiB / connection,"
        f" traced {traced / n / 1024:.1f} KiB / connection",
        f"{'bytes/conn':>10} {'blocks/conn':>11}  where",
    ]
    for stat in sorted(stats, key=lambda s: -s.size_diff)[: args.top]:
        where = "\n".join(f"{' ' * 24}{line}" for line in stat.traceback.format()).strip()
        lines.append(f"{stat.size_diff / n:>10.0f} {stat.count_diff / n:>11.2f}  {where}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import uvloop

    measured = uvloop.run(measure(args))
    print(report(args, measured))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
