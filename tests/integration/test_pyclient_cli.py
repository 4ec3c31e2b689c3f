"""The ``chat`` command, run as a subprocess against a real server and the upstream double."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.procs import free_port
from tests.harness import RunningServer, make_token, run_server
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import MARKDOWN_TEXT, NORMAL_TEXT, SLOW_TEXT

ENV_NAMES = ("LLM_RELAY_URL", "LLM_RELAY_TOKEN", "LLM_RELAY_PASSWORD", "LLM_RELAY_HISTORY")


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


async def start_cli(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llm_relay_client.cli",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or cli_env(),
        cwd=os.getcwd(),
    )


async def run_cli(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int, str, str]:
    proc = await start_cli(*args, env=env)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def token_args(server: RunningServer, sub: str = "alice") -> list[str]:
    return ["--url", server.url, "--token", make_token(sub, name=sub.title())]


async def test_piped_prompt_streams_the_answer_to_stdout(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    code, out, err = await run_cli(
        *token_args(server), "--model", "double/echo", stdin="What is 2+2?\n"
    )
    assert (code, err) == (0, "")
    assert out == "echo: What is 2+2?\n"
    assert upstream.requests[-1].body["messages"] == [{"role": "user", "content": "What is 2+2?"}]


async def test_prompt_argument_system_and_options_reach_the_upstream(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    env = cli_env(LLM_RELAY_TOKEN=make_token("bob"), LLM_RELAY_URL=server.url)
    code, out, _err = await run_cli(
        "Summarize",
        "this:",
        "--system",
        "Be brief.",
        "--model",
        "double/normal",
        "--temperature",
        "0.3",
        "--max-tokens",
        "50",
        stdin="piped text",
        env=env,
    )
    assert code == 0
    assert out == NORMAL_TEXT + "\n"
    body = upstream.requests[-1].body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Summarize this:\n\npiped text"},
    ]
    assert (body["temperature"], body["max_tokens"]) == (0.3, 50)


async def test_bad_token_is_a_clear_auth_error(server: RunningServer) -> None:
    code, out, err = await run_cli("--url", server.url, "--token", "not-a-jwt", "Hi")
    assert code == 3
    assert out == ""
    assert "unauthorized" in err
    expired = make_token("alice", ttl=-5)
    code, _out, err = await run_cli("--url", server.url, "--token", expired, "Hi")
    assert code == 3
    assert "token_expired" in err
    code, _out, err = await run_cli("--url", server.url, "Hi")
    assert code == 3
    assert "--token" in err


async def test_exit_codes_for_upstream_refused_usage_and_connection(server: RunningServer) -> None:
    code, _out, err = await run_cli(*token_args(server), "--model", "double/http_402", "Hi")
    assert code == 4
    assert "insufficient_credits" in err
    code, _out, err = await run_cli(*token_args(server), "--temperature", "5", "Hi")
    assert code == 6
    assert "invalid_payload" in err
    code, _out, err = await run_cli(*token_args(server), "--temperature", "warm", "Hi")
    assert code == 2
    code, _out, err = await run_cli(*token_args(server), stdin="   \n")
    assert code == 2
    assert "empty" in err
    code, _out, err = await run_cli(
        "--url", f"http://127.0.0.1:{free_port()}", "--token", "x", "Hi"
    )
    assert code == 5
    assert "connection_error" in err


async def test_json_prints_protocol_events_line_by_line(server: RunningServer) -> None:
    code, out, _err = await run_cli(*token_args(server), "--json", "-m", "double/normal", "Hi")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["type"] == "session"
    assert events[0]["user"]["id"] == "alice"
    tokens = [e for e in events if e["type"] == "token"]
    assert [t["seq"] for t in tokens] == list(range(len(tokens)))
    assert "".join(t["content"] for t in tokens) == NORMAL_TEXT
    assert events[-1]["type"] == "done"
    assert events[-1]["finish_reason"] == "stop"
    assert {e["request_id"] for e in events[1:]} == {events[-1]["request_id"]}
    code, out, _err = await run_cli(*token_args(server), "--json", "-m", "double/http_503", "Hi")
    assert code == 4
    last = json.loads(out.splitlines()[-1])
    assert (last["type"], last["code"], last["retryable"]) == (
        "error",
        "upstream_unavailable",
        True,
    )


async def test_sigint_cancels_the_stream_and_exits(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    proc = await start_cli(*token_args(server), "--model", "double/slow", "Count")
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.close()
    first = await asyncio.wait_for(proc.stdout.read(7), 20)  # "token1 "
    assert first == b"token1 "
    recorded = upstream.requests[-1]
    proc.send_signal(signal.SIGINT)
    await upstream.wait_closed(recorded, timeout=10)
    assert recorded.closed_by_client
    assert await asyncio.wait_for(proc.wait(), 10) == 130
    rest = await proc.stdout.read()
    assert SLOW_TEXT.startswith((first + rest).decode().rstrip("\n"))
    assert proc.stderr is not None
    assert "cancelled" in (await proc.stderr.read()).decode()


async def test_second_sigint_exits_at_once(
    upstream: UpstreamDouble, settings_for: Callable[..., Any]
) -> None:
    """Even when the stream does not end after the first Ctrl-C, the second one exits."""
    async with run_server(settings_for()) as srv:
        proc = await start_cli(*token_args(srv), "--model", "double/slow", "Count")
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.close()
        await asyncio.wait_for(proc.stdout.read(7), 20)
        recorded = upstream.requests[-1]
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 130
        await upstream.wait_closed(recorded, timeout=10)
        assert recorded.closed_by_client


async def test_interactive_mode_keeps_the_conversation(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    code, out, _err = await run_cli(
        *token_args(server), "-i", "-m", "double/echo", stdin="first\n/reset\nsecond\nthird\n"
    )
    assert code == 0
    assert out == "echo: first\necho: second\necho: third\n"
    bodies = [r.body["messages"] for r in upstream.requests[-3:]]
    assert bodies[0] == [{"role": "user", "content": "first"}]
    assert bodies[1] == [{"role": "user", "content": "second"}]  # after /reset
    assert bodies[2] == [
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "echo: second"},
        {"role": "user", "content": "third"},
    ]


async def test_user_and_password_log_in_via_auth_token(
    upstream: UpstreamDouble, settings_for: Callable[..., Any], tmp_path: Path
) -> None:
    from auth.users import UserStore

    users = tmp_path / "users.toml"
    UserStore(users).add("erin", "correct horse", "Erin")
    async with run_server(settings_for(users_file=users)) as srv:
        env = cli_env(LLM_RELAY_PASSWORD="correct horse")
        code, out, _err = await run_cli(
            "--url", srv.url, "--user", "erin", "--json", "-m", "double/normal", "Hi", env=env
        )
        assert code == 0
        assert json.loads(out.splitlines()[0])["user"] == {"id": "erin", "name": "Erin"}
        env = cli_env(LLM_RELAY_PASSWORD="wrong")
        code, _out, err = await run_cli("--url", srv.url, "--user", "erin", "Hi", env=env)
        assert code == 3
        assert "unauthorized" in err


async def test_a_reader_that_goes_away_ends_the_command_quietly(
    server: RunningServer, upstream: UpstreamDouble, tmp_path: Path
) -> None:
    """``chat ... | head -n 1`` as a real pipeline: no BrokenPipe traceback, exit code 0,
    and the request is closed upstream at once (a deliberate disconnect)."""
    argv = " ".join(
        shlex.quote(a)
        for a in (sys.executable, "-m", "llm_relay_client.cli", *token_args(server), "-m")
    )
    for model in ("double/markdown", "double/slow"):  # several lines; one line, slowly
        flag = "" if model == "double/markdown" else "--json"
        script = f"set -o pipefail; {argv} {model} {flag} Hi 2>chat.err | head -n 1"
        env = cli_env(PYTHONPATH=os.getcwd())
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            script,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=tmp_path,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, (model, err)
        assert (tmp_path / "chat.err").read_text() == ""
        if model == "double/markdown":
            assert out.decode() == MARKDOWN_TEXT.splitlines()[0] + "\n"
        else:
            assert json.loads(out)["type"] == "session"
            recorded = upstream.requests[-1]
            await upstream.wait_closed(recorded, timeout=10)
            assert recorded.closed_by_client
            assert len(recorded.sent_text) < len(SLOW_TEXT)
