"""The usage ledger and budgets through a real server: /usage/me, /usage, budget_exceeded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from auth.users import Account, UserStore, hash_password
from tests.harness import Recorder, RunningServer, assert_clean_stream, make_token, run_server
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import Scenario

Factory = Callable[[], Recorder]
LONG_TEXT = " ".join(f"w{i}" for i in range(3000))


def to_midnight() -> float:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


async def get(url: str, token: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status, await resp.json()


async def chat(rec: Recorder, text: str = "hello there", **fields: Any) -> tuple[str, Any]:
    ack = await rec.call("chat", {"messages": [{"role": "user", "content": text}], **fields})
    if not ack["ok"]:
        return "refused", ack["error"]
    return await rec.terminal(ack["request_id"], timeout=20)


async def usage_settled(server: RunningServer, token: str, requests: int) -> dict[str, Any]:
    """``/usage/me`` once the background writer has put ``requests`` rows in the ledger."""
    deadline = time.monotonic() + 10
    while True:
        status, body = await get(server.url + "/usage/me", token)
        assert status == 200, body
        if body["today"]["requests"] >= requests or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.05)


async def test_usage_me_is_the_sum_of_the_usage_in_done(
    upstream: UpstreamDouble, settings_for: Callable[..., Any], recorders: Factory
) -> None:
    alice, bob = make_token("alice"), make_token("bob")
    async with run_server(settings_for()) as server:
        rec, other = recorders(), recorders()
        await rec.connect(server.url, alice)
        await other.connect(server.url, bob)
        dones = []
        for text in ("one", "two words", "three words here"):
            event, done = await chat(rec, text)
            assert event == "done"
            dones.append(done)
        event, done_bob = await chat(other)
        assert event == "done"
        body = await usage_settled(server, alice, 3)
        async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as resp:
            metrics = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(await resp.text())
                for sample in family.samples
            }
    today = datetime.now(UTC).date().isoformat()
    assert body["user"] == "alice"
    assert body["budget"] == {}
    assert body["today"]["requests"] == 3
    for name in ("prompt_tokens", "completion_tokens"):
        assert body["today"][name] == sum(d["usage"][name] for d in dones)
    assert body["today"]["cost"] == pytest.approx(sum(d["usage"]["cost"] for d in dones))
    assert body["days"] == [{"date": today, **body["today"]}]
    model = dones[0]["model"]
    everyone = [*dones, done_bob]
    completion = (("kind", "completion"), ("model", model))
    assert metrics[("llm_relay_model_tokens_total", completion)] == sum(
        d["usage"]["completion_tokens"] for d in everyone
    )
    assert metrics[("llm_relay_model_cost_usd_total", (("model", model),))] == pytest.approx(
        sum(d["usage"]["cost"] for d in everyone)
    )


async def test_usage_needs_a_token_and_the_operator_view_an_admin(
    upstream: UpstreamDouble,
    settings_for: Callable[..., Any],
    recorders: Factory,
    tmp_path: Any,
) -> None:
    users_file = tmp_path / "users.toml"
    UserStore(users_file).save(
        {
            "root": Account("root", hash_password("root-password", rounds=4), "Root", admin=True),
            "carol": Account("carol", hash_password("carol-password", rounds=4), "Carol"),
        }
    )
    async with run_server(settings_for(users_file=users_file)) as server:
        rec = recorders()
        await rec.connect(server.url, make_token("alice"))
        assert (await chat(rec))[0] == "done"
        await usage_settled(server, make_token("alice"), 1)
        assert (await get(server.url + "/usage/me", None))[0] == 401
        assert (await get(server.url + "/usage/me", "not-a-jwt"))[0] == 401
        assert (await get(server.url + "/usage", make_token("alice")))[0] == 403
        assert (await get(server.url + "/usage", make_token("x", roles=["user"])))[0] == 403
        status, body = await get(server.url + "/usage", make_token("ops", roles=["admin"]))
        assert status == 200, body
        assert [u["user"] for u in body["users"]] == ["alice"]
        assert body["users"][0]["total"]["requests"] == 1
        assert body["users"][0]["today"] == body["users"][0]["total"]
        assert body["users"][0]["days"][0]["requests"] == 1
        assert [m["requests"] for m in body["models"]] == [1]
        status, body = await get(server.url + "/usage?user=nobody", make_token("o", roles="admin"))
        assert (status, body["users"]) == (200, [])
        assert (await get(server.url + "/usage?from=2026-13-01", make_token("o", roles="admin")))[
            0
        ] == 422
        async with aiohttp.ClientSession() as http:
            tokens = {}
            for user in ("root", "carol"):
                form = {"username": user, "password": f"{user}-password"}
                async with http.post(server.url + "/auth/token", data=form) as resp:
                    assert resp.status == 200
                    tokens[user] = (await resp.json())["access_token"]
        assert (await get(server.url + "/usage", tokens["root"]))[0] == 200
        assert (await get(server.url + "/usage", tokens["carol"]))[0] == 403


async def test_a_spent_budget_refuses_the_next_request_until_midnight(
    upstream: UpstreamDouble, settings_for: Callable[..., Any], recorders: Factory
) -> None:
    async with run_server(settings_for(budget_tokens_per_day=20)) as server:
        rec, other = recorders(), recorders()
        token = make_token("alice")
        await rec.connect(server.url, token)
        await other.connect(server.url, make_token("bob"))
        event, done = await chat(rec)  # ~14 tokens: within the budget
        assert event == "done", done
        event, _ = await chat(rec)  # crosses it (the answer is stopped or completes)
        event, error = await chat(rec)
        assert event == "refused"
        assert error["code"] == "budget_exceeded"
        assert error["retryable"] is True
        assert abs(error["retry_after"] - to_midnight()) < 5
        refused = await rec.wait_for(lambda e, d: e == "error" and "request_id" not in d)
        assert refused[1]["code"] == "budget_exceeded"
        assert (await chat(other))[0] == "done"  # other users are unaffected
        body = await usage_settled(server, token, 2)
        assert body["budget"] == {"tokens_per_day": 20}
        # The JWT claim overrides the setting, per user.
        generous = recorders()
        await generous.connect(server.url, make_token("alice", budget={"tokens_per_day": 10**6}))
        assert (await chat(generous))[0] == "done"


async def test_a_stream_crossing_the_budget_stops_within_one_batch(
    upstream: UpstreamDouble, settings_for: Callable[..., Any], recorders: Factory
) -> None:
    upstream.set_default(Scenario(text=LONG_TEXT, delay_s=0.002))
    async with run_server(settings_for(token_coalesce_ms=20)) as server:
        rec = recorders()
        token = make_token("alice", budget={"tokens_per_day": 100})
        await rec.connect(server.url, token)
        ack = await rec.call("chat", {"messages": [{"role": "user", "content": "go"}]})
        event, error = await rec.terminal(ack["request_id"], timeout=20)
        assert event == "error", error
        assert error["code"] == "budget_exceeded"
        assert abs(error["retry_after"] - to_midnight()) < 5
        assert_clean_stream(rec, ack["request_id"])
        assert error["last_seq"] == rec.tokens(ack["request_id"])[-1]["seq"]  # v2
        batches = [len(t["content"].split()) for t in rec.tokens(ack["request_id"])]
        assert sum(batches[:-1]) < 100 <= sum(batches)  # stopped by the batch that crossed
        recorded = upstream.requests[-1]
        await upstream.wait_closed(recorded, timeout=5)
        assert recorded.closed_by_client  # the upstream request was closed
        body = await usage_settled(server, token, 1)
        assert body["today"]["completion_tokens"] == sum(batches)  # relayed deltas, no usage
        event, error = await chat(rec)
        assert (event, error["code"]) == ("refused", "budget_exceeded")


async def test_the_raw_websocket_is_held_to_the_same_budget(
    upstream: UpstreamDouble, settings_for: Callable[..., Any]
) -> None:
    upstream.set_default(Scenario(text=LONG_TEXT, delay_s=0.002))
    token = make_token("alice", budget={"tokens_per_day": 50})
    request = {"messages": [{"role": "user", "content": "go"}]}
    async with run_server(settings_for()) as server:
        url = f"{server.ws_url}/websockets/openrouter"
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=headers) as ws:
            frames = []
            for _ in range(2):
                await ws.send_json(request)
                while True:
                    frame = await ws.receive_json(timeout=20)
                    frames.append(frame)
                    if frame["type"] in ("done", "error"):
                        break
    first, second = (f for f in frames if f["type"] == "error")
    assert first["code"] == "budget_exceeded"
    assert first["request_id"] == frames[0]["request_id"]  # the stream was stopped
    assert first["last_seq"] == [f for f in frames if f["type"] == "token"][-1]["seq"]
    relayed = [len(f["content"].split()) for f in frames if f["type"] == "token"]
    assert sum(relayed[:-1]) < 50 <= sum(relayed)
    assert second["code"] == "budget_exceeded"  # the next one is refused
    assert abs(second["retry_after"] - to_midnight()) < 5


async def test_rows_still_pending_at_shutdown_are_written_before_exit(
    upstream: UpstreamDouble, settings_for: Callable[..., Any], recorders: Factory
) -> None:
    settings = settings_for()
    token = make_token("alice")
    async with run_server(settings) as server:
        rec = recorders()
        await rec.connect(server.url, token)
        for _ in range(3):
            assert (await chat(rec))[0] == "done"
        await rec.close()
    async with run_server(settings) as server:  # the same database, a new process state
        status, body = await get(server.url + "/usage/me", token)
    assert status == 200
    assert body["today"]["requests"] == 3
