"""The model catalog: allowlist, upstream list with caching, fallbacks."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from services.upstream.catalogue import ModelCatalog, ModelInfo, ModelListError, parse_model_list


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Upstream:
    def __init__(self, models: list[ModelInfo]) -> None:
        self.models = models
        self.calls = 0
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> list[ModelInfo]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ModelListError("down")
        return list(self.models)


def ids(listing: object) -> list[str]:
    return [m.id for m in listing.models]  # type: ignore[attr-defined]


def test_parse_takes_ids_and_names_and_skips_junk() -> None:
    body = orjson.dumps(
        {
            "data": [
                {"id": "a/one", "name": "One"},
                {"id": "b/two"},
                {"id": ""},
                {"name": "no id"},
                "junk",
                {"id": "a/one", "name": "duplicate"},
                {"id": "x" * 300},
            ]
        }
    )
    assert parse_model_list(body) == [ModelInfo("a/one", "One"), ModelInfo("b/two", "b/two")]


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"data": 3}'])
def test_parse_refuses_other_shapes(body: bytes) -> None:
    with pytest.raises(ModelListError):
        parse_model_list(body)


async def test_allowlist_is_the_list_and_the_upstream_is_not_asked() -> None:
    upstream = Upstream([ModelInfo("other/model", "Other")])
    catalog = ModelCatalog("d/default", ["a/x", "b/y", "a/x"], upstream)
    listing = await catalog.list()
    assert listing.source == "allowlist"
    assert ids(listing) == ["d/default", "a/x", "b/y"]
    assert upstream.calls == 0


async def test_upstream_list_is_cached_with_the_default_first() -> None:
    clock = Clock()
    upstream = Upstream([ModelInfo("a/x", "X"), ModelInfo("d/default", "Default")])
    catalog = ModelCatalog("d/default", [], upstream, ttl_s=600, clock=clock)
    first = await catalog.list()
    assert first.source == "upstream"
    assert ids(first) == ["d/default", "a/x"]
    assert first.models[0].name == "Default"
    clock.now += 599
    assert await catalog.list() is first
    assert upstream.calls == 1
    clock.now += 2
    await catalog.list()
    assert upstream.calls == 2


async def test_concurrent_callers_share_one_fetch() -> None:
    upstream = Upstream([ModelInfo("a/x", "X")])
    upstream.gate = asyncio.Event()
    catalog = ModelCatalog("d/default", [], upstream)
    tasks = [asyncio.ensure_future(catalog.list()) for _ in range(5)]
    await asyncio.sleep(0.01)
    upstream.gate.set()
    results = await asyncio.gather(*tasks)
    assert upstream.calls == 1
    assert all(ids(r) == ["d/default", "a/x"] for r in results)


async def test_a_failed_fetch_serves_the_last_good_list_and_retries_later() -> None:
    clock = Clock()
    upstream = Upstream([ModelInfo("a/x", "X")])
    catalog = ModelCatalog("d/default", [], upstream, ttl_s=60, failure_ttl_s=10, clock=clock)
    good = await catalog.list()
    clock.now += 61
    upstream.fail = True
    assert await catalog.list() is good
    clock.now += 5
    await catalog.list()
    assert upstream.calls == 2  # not asked again before failure_ttl_s
    clock.now += 6
    upstream.fail = False
    upstream.models = [ModelInfo("b/y", "Y")]
    assert ids(await catalog.list()) == ["d/default", "b/y"]


async def test_no_list_at_all_falls_back_to_the_default_model() -> None:
    upstream = Upstream([])
    upstream.fail = True
    catalog = ModelCatalog("d/default", [], upstream)
    listing = await catalog.list()
    assert listing.source == "default"
    assert ids(listing) == ["d/default"]
