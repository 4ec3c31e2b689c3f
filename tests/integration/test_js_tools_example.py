"""clients/js/tools.mjs against the demo's tool-calling simulator: the model asks for
get_weather, the script runs it and sends the result back, the model answers with it."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from tests.harness import spawn_server
from tests.integration.test_node_socketio_client import ROOT, require_node

pytestmark = [pytest.mark.node, pytest.mark.timeout(90)]


async def test_tool_round_trip_with_the_demo_simulator() -> None:
    node = require_node()
    server = await spawn_server({}, args=("--demo",))
    try:
        minted = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server",
            "--port",
            str(server.port),
            "token",
            "--guest",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        token = (await minted.communicate())[0].decode().strip()
        assert minted.returncode == 0
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_RELAY_")}
        env.update({"LLM_RELAY_URL": server.url, "LLM_RELAY_TOKEN": token})
        proc = await asyncio.create_subprocess_exec(
            node,
            str(ROOT / "clients" / "js" / "tools.mjs"),
            "What's the weather in Paris?",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert '[get_weather({"location":' in err.decode()
        assert '"temperature_c":18' in err.decode()
        answer = out.decode()
        assert "The tool `get_weather` answered" in answer, answer
        assert "partly cloudy" in answer
    finally:
        await server.stop()
