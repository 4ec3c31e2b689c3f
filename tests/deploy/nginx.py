"""Real nginx (Debian's package) in front of real nodes, for the load-balancer tests.

The site is ``deploy/nginx.conf`` itself — the file the compose profile mounts and the
README's recipe installs — with its ``server`` lines pointed at loopback nodes and its
``listen`` at a free port.  A small main configuration around it keeps the pid file, the
logs and the temporary files in a private directory, so nginx runs as a foreground
process of the test (``-g 'daemon off;'``), with no privileges and no system files.

The access log names, per request, the client's address and the node that served it
(``$upstream_addr``): the tests read stickiness from it, as an operator would.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp

from bench.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "deploy" / "nginx.conf"
UPSTREAM_RE = re.compile(r"(upstream llm_relay \{\n)(.*?)(\})", re.S)
STICKY_LINE = "    hash $remote_addr consistent;\n"
LOG_FORMAT = "$remote_addr|$upstream_addr|$status|$request_method|$request_uri"

MAIN = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    log_format relay '{log_format}';
    access_log {dir}/access.log relay;
    include {dir}/site.conf;
}}
"""


def nginx_binary() -> str | None:
    """Debian installs nginx in /usr/sbin, which an unprivileged PATH may lack."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


def site_config(node_ports: Sequence[int], listen_port: int, *, sticky: bool = True) -> str:
    """deploy/nginx.conf with its nodes on loopback and its ``listen`` on ``listen_port``;
    ``sticky=False`` drops the hash line (plain round robin), to show what it is for."""
    text = SITE.read_text()
    match = UPSTREAM_RE.search(text)
    assert match is not None, "deploy/nginx.conf has no `upstream llm_relay {` block"
    body = match.group(2)
    assert STICKY_LINE in body, f"deploy/nginx.conf's upstream block changed:\n{body}"
    servers = "".join(f"    server 127.0.0.1:{port};\n" for port in node_ports)
    body = (STICKY_LINE if sticky else "") + servers
    text = text[: match.start(2)] + body + text[match.end(2) :]
    text, count = re.subn(r"listen 8080;", f"listen 127.0.0.1:{listen_port};", text)
    assert count == 1, "deploy/nginx.conf should listen on 8080"
    return text


@dataclass(frozen=True)
class Access:
    """One access-log line: who asked, which node answered (the last one tried)."""

    client: str
    node: int | None
    status: int
    method: str
    uri: str

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.uri).query).items()}


@dataclass
class Nginx:
    proc: asyncio.subprocess.Process
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access(self) -> list[Access]:
        lines = (self.directory / "access.log").read_text().splitlines()
        out = []
        for line in lines:
            client, upstream, status, method, uri = line.split("|", 4)
            last = upstream.split(",")[-1].strip()
            node = int(last.rsplit(":", 1)[1]) if ":" in last else None
            out.append(Access(client, node, int(status), method, uri))
        return out

    def errors(self) -> str:
        return (self.directory / "error.log").read_text(errors="replace")

    async def node_of(self, address: str) -> int:
        """The node's port that requests from ``address`` go to: one GET /health from
        there, and the access log's word on where it went."""
        async with (
            source_session(address) as http,
            http.get(f"{self.url}/health") as resp,
        ):
            assert resp.status == 200, await resp.text()
        (line,) = await self.logged(lambda a: a.client == address and a.uri == "/health")
        assert line.node is not None, line
        return line.node

    async def logged(self, predicate: Callable[[Access], bool], timeout: float = 5) -> list[Access]:
        """The access-log lines that match, once there is one (nginx writes a line just
        after the response, so a client may be quicker than the log)."""
        deadline = time.monotonic() + timeout
        while not (lines := [a for a in self.access() if predicate(a)]):
            assert time.monotonic() < deadline, f"not logged; last lines: {self.access()[-3:]}"
            await asyncio.sleep(0.01)
        return lines


def source_session(
    address: str, trace_configs: list[aiohttp.TraceConfig] | None = None
) -> aiohttp.ClientSession:
    """An aiohttp session whose connections leave from ``address`` (any of 127.0.0.0/8)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(address, 0)), trace_configs=trace_configs
    )


@asynccontextmanager
async def running_nginx(
    node_ports: Sequence[int], *, sticky: bool = True, ready_timeout: float = 10
) -> AsyncIterator[Nginx]:
    binary = nginx_binary()
    assert binary is not None, "nginx is not installed (make system-deps)"
    # Not pytest's tmp_path: run as root, nginx's workers are `nobody` and must reach
    # the temporary directories inside this one.
    directory = Path(tempfile.mkdtemp(prefix="llm-relay-nginx-"))
    directory.chmod(0o755)
    port = free_port()
    (directory / "site.conf").write_text(site_config(node_ports, port, sticky=sticky))
    (directory / "nginx.conf").write_text(MAIN.format(dir=directory, log_format=LOG_FORMAT))
    argv = [binary, "-p", str(directory), "-c", str(directory / "nginx.conf")]
    argv += ["-e", str(directory / "error.log"), "-g", "daemon off;"]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    nginx = Nginx(proc, port, directory)
    try:
        deadline = time.monotonic() + ready_timeout
        while not _accepts(port):
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError("nginx did not start:\n" + nginx.errors())
            await asyncio.sleep(0.02)
        yield nginx
    finally:
        if proc.returncode is None:
            proc.terminate()  # SIGTERM: nginx's fast shutdown
            with suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
