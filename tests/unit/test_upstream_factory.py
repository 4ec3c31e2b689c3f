"""server/upstream.py: the one place the Upstream is chosen, and the model settings check."""

from __future__ import annotations

import pytest

from server.security import ConfigError
from server.settings import Settings
from server.upstream import build_upstream, check_models
from services.upstream.base import Dialect
from services.upstream.client import UpstreamClient
from services.upstream.simulator import SIMULATOR_MODEL, SIMULATOR_MODEL_IDS, Simulator
from services.upstream.tracing import TracedUpstream


def settings(**values: object) -> Settings:
    return Settings(**{"openrouter_api_key": None, **values})


def test_the_default_model_is_openrouter_auto_and_the_dialect_openrouter() -> None:
    s = settings()
    assert s.default_model == "openrouter/auto"
    assert s.upstream_dialect == "openrouter"
    assert settings(upstream_dialect="OpenAI").upstream_dialect == "openai"
    with pytest.raises(ValueError, match="upstream_dialect"):
        settings(upstream_dialect="anthropic")


def test_demo_allows_and_defaults_to_the_simulators_models() -> None:
    s = settings(demo=True)
    assert s.default_model == SIMULATOR_MODEL
    assert s.allowed_models == list(SIMULATOR_MODEL_IDS)
    check_models(s)


def test_a_default_model_the_allowlist_refuses_stops_the_start() -> None:
    check_models(settings(allowed_models="a/b,c/d", default_model="c/d"))
    check_models(settings())  # no allowlist: anything goes
    with pytest.raises(
        ConfigError, match=r"DEFAULT_MODEL=openrouter/auto is not in ALLOWED_MODELS"
    ):
        check_models(settings(allowed_models="a/b,c/d"))
    with pytest.raises(ConfigError, match="demo mode"):
        check_models(settings(demo=True, default_model="x/y"))
    with pytest.raises(ConfigError, match="only the simulator's models"):
        check_models(settings(demo=True, allowed_models=f"{SIMULATOR_MODEL},x/y"))


def test_build_upstream_picks_client_or_simulator_traced_or_not() -> None:
    client = build_upstream(settings(openrouter_api_key="k", upstream_dialect="openai"))
    assert isinstance(client, UpstreamClient)
    assert client.configured
    assert client.dialect is Dialect.OPENAI
    assert not build_upstream(settings()).configured  # no key
    assert isinstance(build_upstream(settings(demo=True)), Simulator)
    traced = build_upstream(settings(demo=True, tracing=True))
    assert isinstance(traced, TracedUpstream)
    assert traced.configured
    assert traced.dialect is Dialect.OPENROUTER
