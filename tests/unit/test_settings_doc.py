"""The README's configuration table is the settings model's (names, order, defaults)."""

from __future__ import annotations

from pathlib import Path

from server.settings import Settings
from server.settings_doc import MEANINGS, README, main, table, with_table


def test_every_setting_has_a_meaning_and_no_meaning_is_stale() -> None:
    assert sorted(Settings.model_fields) == sorted(MEANINGS)


def test_readme_table_matches_the_settings_model() -> None:
    readme = README.read_text(encoding="utf-8")
    assert with_table(readme) == readme, "run: .venv/bin/python -m server.settings_doc"
    assert main(["--check"]) == 0
    rows = table().splitlines()[2:]
    assert len(rows) == len(Settings.model_fields)
    assert "| `MAX_MESSAGE_CHARS` |" in table()
    assert "`100000` |" in next(r for r in rows if "`MAX_MESSAGE_CHARS`" in r)


def test_a_drifted_table_is_caught(tmp_path: Path) -> None:
    copy = tmp_path / "README.md"
    readme = README.read_text(encoding="utf-8")
    copy.write_text(readme.replace("| `MAX_MESSAGES` |", "| `MAX_MESAGES` |"), encoding="utf-8")
    assert main(["--check", "--readme", str(copy)]) == 1
    assert main(["--readme", str(copy)]) == 0
    assert copy.read_text(encoding="utf-8") == readme
