"""The Node example (clients/js/chat.mjs) against the real server and the upstream double."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from auth.users import UserStore
from tests.harness import RunningServer, make_token, run_server
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import NORMAL_TEXT, REASONING_TEXT

pytestmark = pytest.mark.node

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "clients" / "js" / "chat.mjs"


class NodeRun:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stdout = ""
        self.stderr = ""

    async def read_until(self, text: str, timeout: float = 15) -> None:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while text not in self.stdout:
                chunk = await self.proc.stdout.read(256)
                if not chunk:
                    raise AssertionError(f"stdout ended before {text!r}: {self.stdout!r}")
                self.stdout += chunk.decode()

    async def finish(self, timeout: float = 30) -> int:
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        self.stdout += out.decode()
        self.stderr += err.decode()
        assert self.proc.returncode is not None
        return self.proc.returncode


async def node(*args: str, env: dict[str, str] | None = None) -> NodeRun:
    binary = shutil.which("node")
    if binary is None:
        pytest.fail("Node.js is not installed")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LLM_RELAY_")}
    proc = await asyncio.create_subprocess_exec(
        binary,
        str(SCRIPT),
        *args,
        cwd=ROOT,
        env={**clean, **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return NodeRun(proc)


async def test_prints_the_streamed_answer(server: RunningServer) -> None:
    run = await node("--url", server.url, "--token", make_token("alice"), "Say hello")
    assert await run.finish() == 0, run.stderr
    assert run.stdout == NORMAL_TEXT + "\n"
    assert "[stop, openrouter/auto," in run.stderr


async def test_logs_in_with_a_password_from_the_environment(
    upstream: UpstreamDouble, settings_for: Callable[..., Any], tmp_path: Path
) -> None:
    users = tmp_path / "users.toml"
    UserStore(users).add("alice", "s3cret-pass-word", "Alice")
    async with run_server(settings_for(users_file=users)) as srv:
        env = {"LLM_RELAY_URL": srv.url, "LLM_RELAY_USER": "alice"}
        run = await node("--model", "double/echo", "Hi there", env=env)
        assert await run.finish() == 2  # no password given
        assert "LLM_RELAY_PASSWORD" in run.stderr

        env["LLM_RELAY_PASSWORD"] = "s3cret-pass-word"
        run = await node("--model", "double/echo", "Hi there", env=env)
        assert await run.finish() == 0, run.stderr
        assert run.stdout == "echo: Hi there\n"
    body = upstream.requests[-1].body
    assert body["messages"] == [{"role": "user", "content": "Hi there"}]


async def test_an_upstream_error_is_reported_with_its_code(server: RunningServer) -> None:
    token = make_token("alice")
    run = await node("--url", server.url, "--token", token, "--model", "double/http_402", "Hi")
    assert await run.finish() == 1
    assert "error: insufficient_credits: " in run.stderr
    assert run.stdout == ""


async def test_a_refused_token_is_reported(server: RunningServer) -> None:
    run = await node("--url", server.url, "--token", "not-a-jwt", "Hi")
    assert await run.finish() == 2
    assert "connection refused: unauthorized" in run.stderr


async def test_ctrl_c_cancels_and_closes_the_upstream(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    token = make_token("alice")
    run = await node("--url", server.url, "--token", token, "--model", "double/slow", "Count")
    await run.read_until("token3 ")
    rec = await upstream.wait_for_request()
    run.proc.send_signal(signal.SIGINT)
    assert await run.finish() == 130
    assert "[cancelled," in run.stderr
    await upstream.wait_closed(rec, timeout=10)
    assert rec.closed_by_client
    assert not rec.completed


async def test_reasoning_and_tool_calls_go_to_stderr(server: RunningServer) -> None:
    token = make_token("alice")
    run = await node(
        "--url", server.url, "--token", token, "--model", "double/reasoning", "--reasoning", "Hi"
    )
    assert await run.finish() == 0, run.stderr
    assert run.stdout == NORMAL_TEXT + "\n"  # the answer alone on stdout
    assert f"\x1b[2m{REASONING_TEXT}\x1b[0m\n" in run.stderr  # the reasoning, dimmed

    run = await node("--url", server.url, "--token", token, "--model", "double/reasoning", "Hi")
    assert await run.finish() == 0, run.stderr
    assert REASONING_TEXT not in run.stderr  # only with --reasoning

    run = await node(
        "--url", server.url, "--token", token, "--model", "double/tool_calls_parallel", "Hi"
    )
    assert await run.finish() == 0, run.stderr
    assert '[tool call get_weather({"location": "Paris, FR"})]' in run.stderr
    assert '[tool call get_time({"timezone": "Europe/Paris"})]' in run.stderr
    assert "[tool_calls," in run.stderr
