"""`python -m server` runs on the fast settings by default (issue 10)."""

from __future__ import annotations

import subprocess
import sys

import aiohttp

from server.settings import Settings
from tests.harness import API_KEY, JWT_SECRET, make_token, spawn_server
from tests.upstream_double import UpstreamDouble


def test_token_coalescing_is_on_by_default() -> None:
    assert Settings.model_fields["token_coalesce_ms"].default == 20


def test_tune_gc_freezes_start_up_objects() -> None:
    code = (
        "import gc; from server.serve import GC_THRESHOLDS, tune_gc; tune_gc(); "
        "assert gc.get_threshold() == GC_THRESHOLDS, gc.get_threshold(); "
        "assert gc.get_freeze_count() > 1000, gc.get_freeze_count()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_python_m_server_streams_without_permessage_deflate(
    upstream: UpstreamDouble,
) -> None:
    server = await spawn_server(
        {
            "JWT_SECRET": JWT_SECRET,
            "OPENROUTER_API_KEY": API_KEY,
            "OPENROUTER_BASE_URL": upstream.base_url,
            "LOG_LEVEL": "warning",
        }
    )
    try:
        url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket"
        async with aiohttp.ClientSession() as http, http.ws_connect(url, compress=15) as ws:
            assert ws.compress == 0  # the client offered permessage-deflate; it was declined
            assert (await ws.receive_str(timeout=5)).startswith("0")
            await ws.send_str('40{"token":"' + make_token("alice") + '"}')
            assert (await ws.receive_str(timeout=5)).startswith("40")
            await ws.send_str(
                '42["chat",{"request_id":"r1","messages":[{"role":"user","content":"hi"}]}]'
            )
            frames: list[str] = []
            while not any(f.startswith('42["done"') for f in frames):
                frame = await ws.receive_str(timeout=10)
                if frame == "2":
                    await ws.send_str("3")
                frames.append(frame)
        assert any(f.startswith('42["token"') for f in frames)
    finally:
        await server.stop()
