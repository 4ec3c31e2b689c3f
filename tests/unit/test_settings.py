"""Settings: the §5 names from the environment and from secrets.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import Settings


def test_secrets_toml_accepts_the_templates_openrouter_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    (tmp_path / "secrets.toml").write_text(
        'OPENROUTER_SECRET = "sk-or-from-template"\nDEFAULT_MODEL = "openai/gpt-4o-mini"\n'
    )
    settings = Settings()
    assert settings.api_key == "sk-or-from-template"
    assert settings.default_model == "openai/gpt-4o-mini"
    assert "sk-or-from-template" in settings.secret_values()


def test_environment_wins_over_secrets_toml_and_lists_split_on_commas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secrets.toml").write_text('OPENROUTER_API_KEY = "from-file"\n')
    monkeypatch.setenv("OPENROUTER_API_KEY", "from-env")
    monkeypatch.setenv("ALLOWED_MODELS", "a/one, b/two,,")
    settings = Settings()
    assert settings.api_key == "from-env"
    assert settings.allowed_models == ["a/one", "b/two"]


def test_none_is_never_an_accepted_algorithm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_ALGORITHMS", "HS256,none")
    with pytest.raises(ValueError, match="none"):
        Settings()


def test_demo_implies_anonymous_and_names_the_simulator() -> None:
    settings = Settings(demo=True)
    assert settings.allow_anonymous is True
    assert settings.default_model == "local/simulator"
    assert Settings(demo=True, default_model="x/y").default_model == "x/y"


def test_heartbeat_defaults_and_names(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert (settings.ping_interval_s, settings.ping_timeout_s) == (25, 20)
    monkeypatch.setenv("PING_INTERVAL_S", "10")
    monkeypatch.setenv("PING_TIMEOUT_S", "5.5")
    settings = Settings()
    assert (settings.ping_interval_s, settings.ping_timeout_s) == (10, 5.5)
