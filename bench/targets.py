"""What a benchmark run measures: our server (one process, or processes sharing Redis,
started as ``python -m server`` or ``uvicorn server.main:app``) and the Node.js peer.
Each target is started fresh for every scenario."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import Proc, free_port, node_binary, start, wait_http
from bench.redisstats import CommandStats

BENCH_DIR = Path(__file__).resolve().parent
NODE_DIR = BENCH_DIR / "node"


@dataclass(frozen=True)
class RunContext:
    upstream_url: str  # OpenAI-compatible base URL, ends in /v1
    jwt_secret: str
    log_dir: Path
    redis_url: str | None = None
    redis_stats: CommandStats | None = None  # INFO commandstats of the run's Redis
    server_cpus: frozenset[int] | None = None  # --pin-servers: the servers under test run here


@dataclass
class Running:
    procs: list[Proc]
    urls: list[str]
    rss_before: int = 0  # KiB, read after the warm-up (idle scenario)

    def cpu(self) -> float:
        return sum(p.cpu() for p in self.procs)

    def rss(self) -> int:
        return sum(p.rss() for p in self.procs)

    def syscalls(self) -> tuple[int, int]:
        counts = [p.syscalls() for p in self.procs]
        return (sum(r for r, _ in counts), sum(w for _, w in counts))

    async def stop(self) -> None:
        for proc in self.procs:
            await proc.stop()


@dataclass(frozen=True)
class Target:
    name: str
    label: str
    kind: str  # "ours" | "peer"
    workers: int = 1  # processes, each on its own port; the load is spread over them
    redis: bool = False
    command: str = "module"  # "module": python -m server | "uvicorn": uvicorn server.main:app
    src: Path = BENCH_DIR.parent  # where `python -m server` runs (another checkout for "before")
    env: dict[str, str] = field(default_factory=dict)

    async def start(self, ctx: RunContext) -> Running:
        if self.kind == "peer":
            return await self._start_peer(ctx)
        return await self._start_ours(ctx)

    async def _start_ours(self, ctx: RunContext) -> Running:
        procs: list[Proc] = []
        urls: list[str] = []
        for index in range(self.workers):
            port = free_port()
            env = {
                "JWT_SECRET": ctx.jwt_secret,
                "OPENROUTER_API_KEY": "bench-key",
                "OPENROUTER_BASE_URL": ctx.upstream_url,
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "PYTHONPATH": str(self.src),
                **self.env,
            }
            if self.redis:
                if ctx.redis_url is None:
                    raise RuntimeError("this target needs Redis")
                env["REDIS_URL"] = ctx.redis_url
            name = f"{self.name}-{index}" if self.workers > 1 else self.name
            proc = await start(
                name,
                self.argv(port),
                env=env,
                cwd=self.src,
                log_dir=ctx.log_dir,
                cpus=ctx.server_cpus,
            )
            procs.append(proc)
            urls.append(f"http://127.0.0.1:{port}")
        running = Running(procs, urls)
        try:
            # N processes importing at once on a busy 2-core machine: 4 took 30 s once
            for proc, url in zip(procs, urls, strict=True):
                await wait_http(f"{url}/health", proc, within_s=30 * self.workers)
        except BaseException:
            await running.stop()
            raise
        return running

    def argv(self, port: int) -> list[str]:
        """The start command: ours reads HOST/PORT from the environment, uvicorn's CLI not."""
        if self.command == "uvicorn":
            host = ["--host", "127.0.0.1", "--port", str(port)]
            return [sys.executable, "-m", "uvicorn", "server.main:app", *host]
        return [sys.executable, "-m", "server"]

    async def _start_peer(self, ctx: RunContext) -> Running:
        procs: list[Proc] = []
        urls: list[str] = []
        for index in range(self.workers):
            port = free_port()
            env = {
                "JWT_SECRET": ctx.jwt_secret,
                "OPENROUTER_API_KEY": "bench-key",
                "OPENROUTER_BASE_URL": ctx.upstream_url,
                "PORT": str(port),
                **self.env,
            }
            name = f"{self.name}-{index}" if self.workers > 1 else self.name
            argv = [node_binary(), str(NODE_DIR / "peer.mjs")]
            procs.append(
                await start(
                    name,
                    argv,
                    env=env,
                    cwd=BENCH_DIR.parent,
                    log_dir=ctx.log_dir,
                    cpus=ctx.server_cpus,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        running = Running(procs, urls)
        try:
            for proc, url in zip(procs, urls, strict=True):
                await wait_http(f"{url}/health", proc)
        except BaseException:
            await running.stop()
            raise
        return running


def all_targets(before_src: Path | None = None) -> list[Target]:
    """Every target a run can name, in the order tables show them."""
    targets = [
        Target("ours", "llm-relay, 1 process", "ours"),
        Target("ours-uvicorn", "llm-relay, uvicorn server.main:app", "ours", command="uvicorn"),
        Target("ours-redis-1", "llm-relay, 1 process + Redis", "ours", redis=True),
        Target(
            "ours-uvicorn-redis",
            "llm-relay, uvicorn server.main:app + Redis",
            "ours",
            redis=True,
            command="uvicorn",
        ),
        Target("ours-2w", "llm-relay, 2 processes + Redis", "ours", workers=2, redis=True),
        Target("ours-4w", "llm-relay, 4 processes + Redis", "ours", workers=4, redis=True),
        Target("peer", "Node socket.io@4 peer", "peer"),
        # the process count without Redis, ours and the peer's (private streams need no
        # sharing): what two processes cost on this machine before any multi-node work
        Target("ours-2p", "llm-relay, 2 processes, no Redis", "ours", workers=2),
        Target("peer-2p", "Node socket.io@4 peer, 2 processes", "peer", workers=2),
    ]
    if before_src is not None:
        targets[:0] = [
            Target("before", "llm-relay before tuning", "ours", src=before_src),
            Target(
                "before-2w",
                "before, 2 processes + Redis",
                "ours",
                workers=2,
                redis=True,
                src=before_src,
            ),
        ]
    return targets


# What `make bench` runs: every figure of the README's tables and every acceptance check
# (one process and two on Redis, both start commands with and without Redis, the peer)
DEFAULT_TARGETS = (
    "ours",
    "ours-uvicorn",
    "ours-redis-1",
    "ours-uvicorn-redis",
    "ours-2w",
    "ours-4w",
    "peer",
)
# `--quick` (a smoke run): one and two processes, both start commands, the peer
QUICK_TARGETS = ("ours", "ours-uvicorn", "ours-2w", "peer")
# `--scale`: 1, 2 and 4 processes on one Redis, for the README's scale-out table
SCALE_TARGETS = ("ours", "ours-redis-1", "ours-2w", "ours-4w")
