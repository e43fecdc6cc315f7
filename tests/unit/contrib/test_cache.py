"""The cache on its in-memory default -> metrics, load spans, quiet logs."""

from __future__ import annotations

import asyncio
import logging

import pytest

from scalepatterns import FakeClock
from scalepatterns.cache import Cache, CacheBackendError
from scalepatterns.contrib import logging as sp_logging
from scalepatterns.contrib import otel, prometheus


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(listeners, clock) -> Cache:
    return Cache(namespace="prices", listeners=listeners, clock=clock)


def test_hits_misses_loads_and_errors(cache, clock, registry, listeners) -> None:
    @cache.cached(ttl=60)
    def price(item: int) -> int:
        clock.advance(0.25)  # the load takes a quarter of a second
        if item < 0:
            raise ValueError("no such item")
        return item * 2

    with prometheus.instrument(registry, listeners=listeners):
        for _ in range(3):
            assert price(7) == 14
        assert price(8) == 16
        with pytest.raises(ValueError):
            price(-1)
        listeners.emit(
            CacheBackendError(
                source="prices",
                function="price",
                backend="redis",
                operation="get",
                error="ConnectionError",
                breaker_open=False,
            )
        )

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"cache": "prices", **labels})

    assert value("scalepatterns_cache_hits_total") == 2
    assert value("scalepatterns_cache_misses_total") == 3
    assert value("scalepatterns_cache_load_duration_seconds_count", early="false") == 2
    assert value("scalepatterns_cache_load_duration_seconds_sum", early="false") == 0.5
    assert value("scalepatterns_cache_load_errors_total") == 1
    assert value("scalepatterns_cache_backend_errors_total", backend="redis", operation="get") == 1


def test_a_load_is_a_child_span_with_its_real_duration(
    cache, clock, provider, exporter, listeners
) -> None:
    @cache.cached(ttl=60)
    def profile(user: int) -> dict[str, int]:
        clock.advance(1.5)
        return {"id": user}

    tracer = provider.get_tracer("tests")
    with otel.instrument(provider, listeners=listeners), tracer.start_as_current_span("GET /p"):
        profile(1)
        profile(1)  # a hit: no span
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert sorted(spans) == ["GET /p", "cache load prices"]
    load, request = spans["cache load prices"], spans["GET /p"]
    assert load.parent.span_id == request.context.span_id
    assert load.end_time - load.start_time == 1_500_000_000
    assert load.attributes["scalepatterns.function"].endswith("profile")


def test_async_functions_count_the_same(cache, clock, registry, listeners) -> None:
    @cache.cached(ttl=60)
    async def price(item: int) -> int:
        clock.advance(0.5)
        return item * 2

    async def calls() -> list[int]:
        return [await price(7) for _ in range(3)]

    with prometheus.instrument(registry, listeners=listeners):
        assert asyncio.run(calls()) == [14, 14, 14]

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"cache": "prices", **labels})

    assert value("scalepatterns_cache_hits_total") == 2
    assert value("scalepatterns_cache_misses_total") == 1
    assert value("scalepatterns_cache_load_duration_seconds_sum", early="false") == 0.5


def test_hits_and_misses_are_not_logged_by_default(cache, listeners, caplog) -> None:
    @cache.cached(ttl=60)
    def f(x: int) -> int:
        return x

    caplog.set_level(logging.DEBUG, logger="tests.cache")
    with sp_logging.instrument(logging.getLogger("tests.cache"), listeners=listeners):
        for _ in range(100):
            f(1)
    assert caplog.records == []
