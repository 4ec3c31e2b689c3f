"""The Upstream as the server wires it: demo models, the model check, upstream connection reuse."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from server.app import ConfigError, create_app
from server.settings import Settings
from services.upstream.simulator import REASONING_MODEL, SIMULATOR_MODEL_IDS, reply_text
from tests.harness import JWT_SECRET, Recorder, make_token, run_server
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import NORMAL_TEXT

HI = [{"role": "user", "content": "Hi!"}]


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_demo_lists_and_accepts_exactly_the_simulators_models(
    recorders: Callable[[], Recorder],
) -> None:
    settings = Settings(demo=True, jwt_secret=JWT_SECRET, shutdown_grace_s=1, port=0)
    async with run_server(settings) as srv:
        listing = await get_json(f"{srv.url}/models")
        assert listing["default_model"] == "local/simulator"
        assert [m["id"] for m in listing["models"]] == list(SIMULATOR_MODEL_IDS)
        rec = recorders()
        await rec.connect(srv.url)  # a guest
        session = await rec.wait_event("session")
        assert session["default_model"] == listing["default_model"]
        refused = await rec.call("chat", {"messages": HI, "model": "openai/gpt-4o"})
        assert refused["ok"] is False
        assert refused["error"]["code"] == "model_not_allowed"
        ack = await rec.call("chat", {"request_id": "r", "messages": HI, "model": REASONING_MODEL})
        assert ack["ok"] is True
        event, done = await rec.terminal("r", timeout=30)
        assert (event, done["finish_reason"], done["model"]) == ("done", "stop", REASONING_MODEL)
        assert rec.text("r") == reply_text("Hi!")


def test_the_server_refuses_to_start_when_the_allowlist_refuses_the_default_model() -> None:
    settings = Settings(jwt_secret=JWT_SECRET, allowed_models="a/b", default_model="c/d")
    with pytest.raises(ConfigError, match="DEFAULT_MODEL=c/d is not in ALLOWED_MODELS"):
        create_app(settings)


async def test_sequential_chats_reuse_one_upstream_connection(
    upstream: UpstreamDouble,
    settings_for: Callable[..., Any],
    recorders: Callable[[], Recorder],
) -> None:
    async with run_server(settings_for()) as srv:
        rec = recorders()
        await rec.connect(srv.url, make_token("alice"))
        for i in range(4):
            request = {"request_id": f"r{i}", "messages": HI, "model": "double/done_linger"}
            assert (await rec.call("chat", request))["ok"] is True
            assert (await rec.terminal(f"r{i}"))[0] == "done"
    assert [r.completed for r in upstream.requests] == [True] * 4
    assert upstream.connections == 1


async def test_a_model_thinking_longer_than_the_first_token_timeout_completes(
    upstream: UpstreamDouble,
    settings_for: Callable[..., Any],
    recorders: Callable[[], Recorder],
) -> None:
    settings = settings_for(upstream_first_token_timeout_s=3, upstream_idle_timeout_s=3)
    async with run_server(settings) as srv:
        rec = recorders()
        await rec.connect(srv.url, make_token("alice"))
        request = {"request_id": "think", "messages": HI, "model": "double/slow_thinker"}
        assert (await rec.call("chat", request))["ok"] is True
        event, done = await rec.terminal("think", timeout=20)
    assert event == "done", done
    assert done["finish_reason"] == "stop"
    assert rec.text("think") == NORMAL_TEXT
