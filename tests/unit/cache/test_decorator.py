"""Decorating the shapes a function comes in, and the events a call emits."""

from __future__ import annotations

import asyncio
import functools

from scalepatterns.cache import Cache, CacheHit, CacheLoad, CacheMiss
from scalepatterns.events import EventRecorder, Listeners


async def _scaled(factor: int, x: int) -> int:
    return factor * x


class AsyncCallable:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, x: int) -> int:
        self.calls += 1
        return x + 1


def test_partials_of_async_functions_and_async_callables_cache_results() -> None:
    cache = Cache.memory()
    scaled = cache.cached(functools.partial(_scaled, 3))
    obj = AsyncCallable()
    plus_one = cache.cached(name="plus_one")(obj)

    async def scenario() -> tuple[int, int, int, int]:
        return await scaled(2), await scaled(2), await plus_one(1), await plus_one(1)

    assert asyncio.run(scenario()) == (6, 6, 2, 2)
    assert scaled.cache_info().hits == 1
    assert obj.calls == 1


def test_include_self_keeps_instances_apart() -> None:
    cache = Cache.memory()

    class Counter:
        def __init__(self, base: int) -> None:
            self.base = base

        def __hash__(self) -> int:
            return self.base

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Counter) and other.base == self.base

        @cache.cached(include_self=True)
        def plus(self, x: int) -> int:
            return self.base + x

    assert Counter(1).plus(1) == 2
    assert Counter(10).plus(1) == 11


def test_hit_miss_and_load_events_on_the_fast_path() -> None:
    listeners = Listeners()
    recorder = EventRecorder()
    listeners.add(recorder)
    cache = Cache.memory(namespace="ev", listeners=listeners)

    @cache.cached()
    def f(x: int) -> int:
        return x

    f(1)
    f(1)
    kinds = [type(e) for e in recorder.events]
    assert kinds == [CacheMiss, CacheLoad, CacheHit]
    assert {e.source for e in recorder.events} == {"ev"}
    assert all("f" in e.function for e in recorder.of_type(CacheHit))
