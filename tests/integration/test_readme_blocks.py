"""The README's "Try it from a terminal" block runs as written against `make run`'s demo.

The demo is `python -m server --demo` on a free port; the only change to the block is that
port (the block says 8000). Every line must exit 0 (bash -e -o pipefail)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys

import pytest

from tests.harness import spawn_server
from tests.integration.test_node_socketio_client import ROOT

pytestmark = [pytest.mark.node, pytest.mark.timeout(180)]


def try_it_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Try it from a terminal") :]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


async def test_the_try_it_block_runs_as_written() -> None:
    for tool in ("make", "node", "npm", "git"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is required (make system-deps)")
    block = try_it_block()
    assert "make -s token" in block
    assert "npm ci" in block
    server = await spawn_server({}, args=("--demo",))
    try:
        script = block.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_RELAY_", "MAKE"))}
        env.update({"PORT": str(server.port), "HOST": "127.0.0.1"})
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-e",
            "-o",
            "pipefail",
            "-c",
            script,
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 150)
        assert proc.returncode == 0, (out.decode()[-2000:], err.decode()[-2000:])
        # Answers from the simulator (`chat`, `--reasoning`, `| head`, room, Node) reached
        # stdout; the room's answer is framed for the room.
        answers = out.decode().count("no real model is connected")
        assert answers >= 4, (answers, out.decode()[-600:])
    finally:
        await server.stop()


async def test_make_token_without_a_running_demo_says_what_to_do() -> None:
    from bench.procs import free_port

    proc = await asyncio.create_subprocess_exec(
        "make",
        "-s",
        "token",
        f"PORT={free_port()}",
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAKE")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0
    assert out == b""  # nothing that $(make -s token) could mistake for a token
    assert "no server answered" in err.decode()
    assert "make run" in err.decode()
    assert "Traceback" not in err.decode()


async def test_the_protocol_v2_python_tool_example_runs_as_written() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Protocol v2") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    server = await spawn_server({}, args=("--demo",))
    try:
        script = match.group(1).replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()[-2000:]
        # the function ran and the simulator's answer quotes its result
        assert "Sunny, 21 °C in Paris" in out.decode(), out.decode()
    finally:
        await server.stop()
