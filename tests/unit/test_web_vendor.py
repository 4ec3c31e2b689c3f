"""The page's vendored socket.io-client is the one package.json installs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "web" / "vendor"
PACKAGE = ROOT / "node_modules" / "socket.io-client"

pytestmark = pytest.mark.node


def test_vendored_socketio_client_matches_node_modules() -> None:
    if not (PACKAGE / "package.json").is_file():
        pytest.fail("node_modules is missing: run npm ci")
    version = json.loads((PACKAGE / "package.json").read_text())["version"]
    assert (VENDOR / "VERSIONS").read_text().split() == ["socket.io-client", version]
    built = (PACKAGE / "dist" / "socket.io.esm.min.js").read_text()
    expected = "".join(
        line
        for line in built.splitlines(keepends=True)
        if not line.startswith("//# sourceMappingURL=")
    )
    assert (VENDOR / "socket.io.esm.min.js").read_text() == expected, "run scripts/vendor-web.sh"
    assert (VENDOR / "socket.io-client.LICENSE").read_text() == (PACKAGE / "LICENSE").read_text()
    assert "Released under the MIT License" in expected[:300]
