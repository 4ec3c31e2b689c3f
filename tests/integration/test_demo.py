"""Demo mode (`python -m server --demo`, what `make run` starts): no key, no token, no internet."""

from __future__ import annotations

import aiohttp

from tests.harness import Recorder, assert_clean_stream, spawn_server


async def test_demo_server_lets_a_guest_chat_with_the_local_simulator() -> None:
    server = await spawn_server({"LOG_LEVEL": "warning"}, args=("--demo",))
    rec = Recorder()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/health/ready") as resp:
                assert resp.status == 200
                ready = await resp.json()
                assert ready["checks"]["upstream"] == "simulator"
            async with http.get(f"{server.url}/") as resp:
                assert resp.status == 200
                assert "llm-relay" in await resp.text()
        await rec.connect(server.url)  # no token at all: a guest
        session = await rec.wait_event("session")
        assert session["user"]["id"].startswith("guest:")
        assert session["default_model"] == "local/simulator"
        ack = await rec.call(
            "chat", {"request_id": "demo", "messages": [{"role": "user", "content": "Hi!"}]}
        )
        assert ack == {"ok": True, "request_id": "demo"}
        event, done = await rec.terminal("demo", timeout=30)
        assert event == "done", done
        assert_clean_stream(rec, "demo")
        text = rec.text("demo")
        assert text.startswith("(local simulator — no real model is connected)")
        assert "“Hi!”" in text
        assert done["finish_reason"] == "stop"
    finally:
        await rec.close()
        assert await server.stop() == 0
