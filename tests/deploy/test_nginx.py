"""Behind a real load balancer (issue 17, point 6): Debian's nginx running
``deploy/nginx.conf`` in front of two ``python -m server`` nodes sharing Redis, everything
on loopback ports, and every client talking to nginx only.

Clients steer themselves to a node by their source address (any of 127.0.0.0/8; the
site hashes the whole client address), and the access log's ``$upstream_addr`` says
which node served each request.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from auth.users import UserStore
from tests.chaos.processes import node_env, start
from tests.deploy.nginx import Nginx, nginx_binary, running_nginx, source_session
from tests.harness import Recorder, SpawnedServer, assert_clean_stream, make_token
from tests.integration.resume_helpers import (
    USER_MSG,
    assert_ends_with_shutdown,
    chat,
    wait_seq,
)
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import NORMAL_TEXT, SLOW_TEXT

pytestmark = [pytest.mark.redis, pytest.mark.nginx, pytest.mark.timeout(120)]

DEFAULT_TRANSPORTS = ["polling", "websocket"]  # python-socketio's and socket.io-client's
INVARIANT_S = 20.0  # protocol invariant 6
PASSWORD = "correct horse battery staple"
LOGIN_LIMIT = 1  # failed logins per account per minute; 5 per address


@pytest.fixture
async def nodes(
    upstream: UpstreamDouble, redis_url: str, key_prefix: str, tmp_path: Path
) -> AsyncIterator[list[SpawnedServer]]:
    if nginx_binary() is None:
        pytest.skip("needs nginx (Debian package `nginx`; `make system-deps` installs it)")
    users = tmp_path / "users.toml"
    UserStore(users).add("carol", PASSWORD)
    env = node_env(
        upstream.base_url,
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=key_prefix,
        NODE_LEASE_S="3",
        USERS_FILE=str(users),
        # python-socketio's polling client, when it disconnects, waits for its pending
        # long poll, which the node answers within a ping interval.
        PING_INTERVAL_S="2",
        PING_TIMEOUT_S="5",
        LOGIN_RATE_LIMIT_PER_MINUTE=str(LOGIN_LIMIT),
    )
    started = await asyncio.gather(start(env), start(env), return_exceptions=True)
    spawned = [node for node in started if isinstance(node, SpawnedServer)]
    try:
        for result in started:
            if isinstance(result, BaseException):
                raise result
        yield spawned
    finally:
        for node in spawned:
            if node.proc.returncode is None:
                node.proc.kill()
            await node.proc.wait()


@pytest.fixture
async def lb(nodes: list[SpawnedServer]) -> AsyncIterator[Nginx]:
    async with running_nginx([node.port for node in nodes]) as nginx:
        yield nginx


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[str], Recorder]]:
    """Recorders whose every request (polling and websocket) leaves from one address."""
    made: list[Recorder] = []
    # python-engineio's polling read loop (engineio/async_client.py, _read_loop_polling)
    # leaves a response that is not 2xx unreleased: the poll a polling-only client sends
    # while it disconnects gets the node's 400 (the session is gone by then), and through
    # nginx its body may still be on the way when the client closes its session.  Garbage
    # collected later, aiohttp's Connection warns (ResourceWarning, an error here) in
    # whichever test runs then.  Those responses are released here, in this fixture.
    refused: list[aiohttp.ClientResponse] = []

    async def keep_refused(_: Any, __: Any, params: aiohttp.TraceRequestEndParams) -> None:
        if params.response.status >= 300:
            refused.append(params.response)

    tracing = aiohttp.TraceConfig()
    tracing.on_request_end.append(keep_refused)

    def make(address: str) -> Recorder:
        # A factory, not a session: python-engineio then closes the session itself when
        # the connection ends, as it does its own (also when a node dies under it).
        client = socketio.AsyncClient(
            reconnection=False, http_session=lambda: source_session(address, [tracing])
        )
        made.append(Recorder(client=client))
        return made[-1]

    yield make
    await asyncio.gather(*(rec.close() for rec in made))
    for rec in made:
        http = rec.client.eio.http  # a refused handshake leaves the client's session open
        if http is not None and not http.closed:
            await http.close()
    for response in refused:
        response.release()


async def connect(
    rec: Recorder, lb: Nginx, sub: str, transports: list[str] = DEFAULT_TRANSPORTS
) -> Recorder:
    # A browser's Origin: the node sees nginx's Host (with its port) and finds it same-origin.
    await rec.connect(
        lb.url,
        make_token(sub, name=sub.title()),
        transports=transports,
        headers={"Origin": lb.url},
    )
    await rec.wait_event("session")
    return rec


async def addresses_by_node(lb: Nginx, ports: list[int], each: int) -> dict[int, list[str]]:
    """``each`` client addresses that nginx sends to each node."""
    found: dict[int, list[str]] = {port: [] for port in ports}
    for last in range(2, 255):
        address = f"127.0.0.{last}"
        mine = found[await lb.node_of(address)]
        if len(mine) < each:
            mine.append(address)
        if all(len(got) == each for got in found.values()):
            return found
    raise AssertionError(f"nginx does not spread 127.0.0.0/24 over the nodes: {found}")


def socketio_requests(lb: Nginx, address: str) -> list[Any]:
    return [a for a in lb.access() if a.client == address and a.uri.startswith("/socket.io/")]


async def test_polling_then_websocket_sessions_stay_on_their_node(
    lb: Nginx, nodes: list[SpawnedServer], clients: Callable[[str], Recorder]
) -> None:
    ports = [node.port for node in nodes]
    by_node = await addresses_by_node(lb, ports, 2)
    upgrading = {address: port for port, got in by_node.items() for address in got[:1]}
    polling = {address: port for port, got in by_node.items() for address in got[1:]}
    recs = {address: clients(address) for address in [*upgrading, *polling]}
    for address, rec in recs.items():
        only_polling = ["polling"] if address in polling else DEFAULT_TRANSPORTS
        await connect(rec, lb, f"user-{address}", only_polling)
    for address in upgrading:
        # the upgrade went through nginx (else python-socketio stays on polling)
        assert recs[address].client.transport() == "websocket", address
    for address in polling:
        assert recs[address].client.transport() == "polling", address
    acks = await asyncio.gather(
        *(rec.call("chat", chat(f"c-{i}", "double/normal")) for i, rec in enumerate(recs.values()))
    )
    assert all(ack["ok"] for ack in acks), acks
    for i, rec in enumerate(recs.values()):
        await rec.terminal(f"c-{i}")
        assert assert_clean_stream(rec, f"c-{i}")[0] == "done"
        assert rec.text(f"c-{i}") == NORMAL_TEXT
    during = [a for a in lb.access() if a.uri.startswith("/socket.io/")]
    assert {a.status for a in during} == {200}, "\n".join(map(str, during))  # no 400
    await asyncio.gather(*(rec.close() for rec in recs.values()))
    # Every request of a session went to the node its client's address hashes to (a
    # request on another node would have been a 400), and both nodes served sessions.
    for address, port in {**upgrading, **polling}.items():
        if address in upgrading:  # logged when it closes
            upgrade = await lb.logged(
                lambda a, at=address: a.client == at and a.query.get("transport") == "websocket"
            )
            assert [a.status for a in upgrade] == [101], upgrade
        served = socketio_requests(lb, address)
        assert {a.node for a in served} == {port}, served
        kinds = [a.query.get("transport") for a in served]
        if address in polling:
            assert set(kinds) == {"polling"}, served
            assert len(kinds) >= 4, served
    assert {a.node for a in lb.access() if a.uri.startswith("/socket.io/")} == set(ports)


async def test_a_room_spans_both_nodes_through_nginx(
    lb: Nginx, nodes: list[SpawnedServer], clients: Callable[[str], Recorder]
) -> None:
    by_node = await addresses_by_node(lb, [node.port for node in nodes], 1)
    (alice_at,), (bob_at,) = by_node.values()
    alice = await connect(clients(alice_at), lb, "alice")
    bob = await connect(clients(bob_at), lb, "bob")
    for rec in (alice, bob):
        assert (await rec.call("join", {"room": "lobby"}))["ok"] is True
    ack = await alice.call("chat", chat("r1", "double/normal", room="lobby"))
    assert ack == {"ok": True, "request_id": "r1"}
    seen = []
    for rec in (alice, bob):
        await rec.terminal("r1")
        assert assert_clean_stream(rec, "r1")[0] == "done"
        assert rec.text("r1") == NORMAL_TEXT
        said = [d for e, d in rec.events if e == "message" and d["role"] == "user"]
        assert [m["content"] for m in said] == [USER_MSG[0]["content"]], said
        seen.append([(e, d.get("seq"), d.get("content")) for e, d in rec.of("r1")])
    assert seen[0] == seen[1]  # the same events, once each, in the same order
    nodes_of = [{a.node for a in socketio_requests(lb, at)} for at in (alice_at, bob_at)]
    assert len(nodes_of[0]) == len(nodes_of[1]) == 1, nodes_of
    assert nodes_of[0] != nodes_of[1], nodes_of


async def test_a_stream_of_a_killed_node_resumes_through_nginx_on_the_other(
    lb: Nginx, nodes: list[SpawnedServer], clients: Callable[[str], Recorder]
) -> None:
    address = "127.0.0.2"
    port = await lb.node_of(address)
    (doomed,) = [node for node in nodes if node.port == port]
    (survivor,) = [node for node in nodes if node.port != port]
    alice = await connect(clients(address), lb, "alice")
    assert (await alice.call("chat", chat("k1", "double/slow")))["ok"] is True
    await wait_seq(alice, "k1", 3)
    doomed.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    await doomed.proc.wait()
    await alice.wait_event("disconnect")
    last_seq = alice.tokens("k1")[-1]["seq"]
    # Back from the same address: nginx finds the node gone and uses the other one.
    back = await connect(clients(address), lb, "alice")
    assert back.client.transport() == "websocket"
    ack = await back.call("resume", {"request_id": "k1", "last_seq": last_seq})
    assert ack == {"ok": True}, ack
    await back.terminal("k1", timeout=INVARIANT_S)
    assert time.monotonic() - killed_at < INVARIANT_S + 1
    assert_ends_with_shutdown(back, "k1", last_seq + 1)
    text = alice.text("k1") + back.text("k1")
    assert SLOW_TEXT.startswith(text), text
    assert len(text) < len(SLOW_TEXT), "the stream ended before the kill"
    sid = back.client.eio.sid
    await back.close()
    served = await lb.logged(lambda a: a.query.get("sid") == sid)  # the upgrade, at its end
    assert {a.node for a in served} == {survivor.port}, served


async def login(lb: Nginx, address: str, user: str, password: str, **headers: str) -> int:
    async with (
        source_session(address) as http,
        http.post(
            f"{lb.url}/auth/token",
            data={"username": user, "password": password},
            headers=headers,
        ) as resp,
    ):
        return resp.status


async def test_nodes_see_the_clients_address_not_nginxs(lb: Nginx) -> None:
    """nginx's X-Forwarded-For, believed from 127.0.0.1 (TRUSTED_PROXIES' default): the
    login throttle counts failures per client address, not one count for everyone."""
    guesser, other = "127.0.0.7", "127.0.0.8"
    for i in range(5 * LOGIN_LIMIT):  # each account once: only the address adds up
        assert await login(lb, guesser, f"nobody{i}", "wrong") == 401
    assert await login(lb, guesser, "nobody-else", "wrong") == 429
    assert await login(lb, other, "nobody-else", "wrong") == 401
    # a client's own X-Forwarded-For is not believed: nginx appends the real address
    assert await login(lb, other, "someone", "wrong", **{"X-Forwarded-For": guesser}) == 401
    assert await login(lb, other, "carol", PASSWORD) == 200
