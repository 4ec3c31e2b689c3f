"""What a benchmark run measures: our server (one process, or workers sharing Redis) and
the Node.js peer.  Each target is started fresh for every scenario."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import Proc, free_port, node_binary, start, wait_http

BENCH_DIR = Path(__file__).resolve().parent
NODE_DIR = BENCH_DIR / "node"


@dataclass(frozen=True)
class RunContext:
    upstream_url: str  # OpenAI-compatible base URL, ends in /v1
    jwt_secret: str
    log_dir: Path
    redis_url: str | None = None


@dataclass
class Running:
    procs: list[Proc]
    urls: list[str]
    rss_before: int = 0  # KiB, read after the warm-up (idle scenario)

    def cpu(self) -> float:
        return sum(p.cpu() for p in self.procs)

    def rss(self) -> int:
        return sum(p.rss() for p in self.procs)

    async def stop(self) -> None:
        for proc in self.procs:
            await proc.stop()


@dataclass(frozen=True)
class Target:
    name: str
    label: str
    kind: str  # "ours" | "peer"
    workers: int = 1
    redis: bool = False
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
                name, [sys.executable, "-m", "server"], env=env, cwd=self.src, log_dir=ctx.log_dir
            )
            procs.append(proc)
            urls.append(f"http://127.0.0.1:{port}")
        running = Running(procs, urls)
        try:
            for proc, url in zip(procs, urls, strict=True):
                await wait_http(f"{url}/health", proc)
        except BaseException:
            await running.stop()
            raise
        return running

    async def _start_peer(self, ctx: RunContext) -> Running:
        port = free_port()
        env = {
            "JWT_SECRET": ctx.jwt_secret,
            "OPENROUTER_API_KEY": "bench-key",
            "OPENROUTER_BASE_URL": ctx.upstream_url,
            "PORT": str(port),
            **self.env,
        }
        proc = await start(
            self.name,
            [node_binary(), str(NODE_DIR / "peer.mjs")],
            env=env,
            cwd=BENCH_DIR.parent,
            log_dir=ctx.log_dir,
        )
        url = f"http://127.0.0.1:{port}"
        running = Running([proc], [url])
        try:
            await wait_http(f"{url}/health", proc)
        except BaseException:
            await running.stop()
            raise
        return running


def default_targets(before_src: Path | None = None) -> list[Target]:
    targets = [
        Target("ours", "llm-relay, 1 process", "ours"),
        Target("ours-2w", "llm-relay, 2 workers + Redis", "ours", workers=2, redis=True),
        Target("peer", "Node socket.io@4 peer", "peer"),
    ]
    if before_src is not None:
        targets.insert(0, Target("before", "llm-relay before tuning", "ours", src=before_src))
    return targets
