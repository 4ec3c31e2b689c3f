"""What the server serves for the page: the page, its assets, /config and /models."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from auth.users import UserStore
from tests.harness import RunningServer, run_server
from tests.upstream_double import UpstreamDouble

WEB = Path(__file__).resolve().parents[2] / "web"


async def get(url: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_the_page_is_served_with_a_strict_content_security_policy(
    server: RunningServer,
) -> None:
    status, headers, body = await get(server.url + "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert b'<script type="module" src="static/js/app.js">' in body


async def test_every_asset_the_page_loads_is_local(server: RunningServer) -> None:
    """No CDN: every script, style and import is served by the app itself."""
    html = (WEB / "index.html").read_text()
    scripts = list((WEB / "js").glob("*.js"))
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    for script in scripts:
        refs += [f"static/js/{m}" for m in re.findall(r'from "\./([^"]+)"', script.read_text())]
        refs += [
            "static/" + m.removeprefix("../")
            for m in re.findall(r'from "(\.\./[^"]+)"', script.read_text())
        ]
    assert "static/vendor/socket.io.esm.min.js" in refs
    for ref in refs:
        assert not re.match(r"^(https?:)?//", ref), ref
        if ref.startswith("#"):
            continue
        status, _headers, _ = await get(f"{server.url}/{ref}")
        assert status == 200, ref
    css = (WEB / "app.css").read_text()
    assert not re.search(r"url\(|@import", css)
    for script in scripts:
        assert not re.search(r"""(from|import\()\s*["'](https?:)?//""", script.read_text())


async def test_config_tells_the_page_how_to_sign_in(
    upstream: UpstreamDouble, settings_for: Callable[..., Any], tmp_path: Path
) -> None:
    users = tmp_path / "users.toml"
    async with run_server(settings_for(users_file=users)) as srv:
        _, _, body = await get(srv.url + "/config")
        config = orjson.loads(body)
        assert config == {
            "protocol": 2,
            "allow_anonymous": False,
            "password_login": False,  # no accounts yet
            "demo": False,
            "default_model": "openrouter/auto",
        }
        UserStore(users).add("alice", "pw-alice-123", "Alice")
        _, _, body = await get(srv.url + "/config")
        assert orjson.loads(body)["password_login"] is True

    async with run_server(settings_for(allow_anonymous=True)) as srv:
        _, _, body = await get(srv.url + "/config")
        assert orjson.loads(body)["allow_anonymous"] is True


async def test_models_come_from_the_upstream_once_then_from_the_cache(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    for _ in range(3):
        status, _, body = await get(server.url + "/models")
        assert status == 200
    listing = orjson.loads(body)
    assert listing["source"] == "upstream"
    assert listing["default_model"] == "openrouter/auto"
    ids = [m["id"] for m in listing["models"]]
    assert ids[0] == "openrouter/auto"
    assert "double/slow" in ids
    assert "openai/gpt-4o-mini" in ids
    assert ids.count("openrouter/auto") == 1
    assert upstream.model_requests == 1


async def test_models_with_an_allowlist_never_ask_the_upstream(
    upstream: UpstreamDouble, settings_for: Callable[..., Any]
) -> None:
    settings = settings_for(
        allowed_models="double/slow,double/normal", default_model="double/normal"
    )
    async with run_server(settings) as srv:
        _, _, body = await get(srv.url + "/models")
    assert orjson.loads(body) == {
        "default_model": "double/normal",
        "models": [
            {"id": "double/normal", "name": "double/normal"},
            {"id": "double/slow", "name": "double/slow"},
        ],
        "source": "allowlist",
    }
    assert upstream.model_requests == 0


async def test_models_fall_back_to_the_default_when_the_upstream_fails(
    upstream: UpstreamDouble, server: RunningServer
) -> None:
    upstream.models_status = 503
    status, _, body = await get(server.url + "/models")
    assert status == 200
    listing = orjson.loads(body)
    assert listing["source"] == "default"
    assert [m["id"] for m in listing["models"]] == ["openrouter/auto"]
