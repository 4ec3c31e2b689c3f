"""web/vendor holds exactly what scripts/vendor-web.sh builds from package.json's packages."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "web" / "vendor"
SCRIPT = ROOT / "scripts" / "vendor-web.sh"

pytestmark = pytest.mark.node


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_vendored_files_are_the_script_output(tmp_path: Path) -> None:
    if not (ROOT / "node_modules" / "socket.io-client" / "package.json").is_file():
        pytest.fail("node_modules is missing: run npm ci")
    subprocess.run(["sh", str(SCRIPT), str(tmp_path)], check=True, capture_output=True)
    built, committed = files(tmp_path), files(VENDOR)
    assert sorted(built) == sorted(committed), "run scripts/vendor-web.sh"
    for name, content in built.items():
        assert committed[name] == content, f"web/vendor/{name} is stale: run scripts/vendor-web.sh"
    versions = (VENDOR / "VERSIONS").read_text().splitlines()
    assert [line.split()[0] for line in versions] == [
        "socket.io-client",
        "@highlightjs/cdn-assets",
        "swagger-ui-dist",
    ]
    assert b"sourceMappingURL" not in committed["highlight.min.js"]
    assert b"Released under the MIT License" in committed["socket.io.esm.min.js"][:300]
