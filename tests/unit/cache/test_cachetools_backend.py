"""`CachetoolsBackend`: the backend contract, per-entry expiry and cachetools' eviction."""

from __future__ import annotations

import cachetools
import pytest

from scalepatterns.cache import Cache, CachetoolsBackend
from scalepatterns.cache.testing import BackendContract
from scalepatterns.clock import FakeClock


class TestCachetoolsBackend(BackendContract):
    locking = tagging = False  # eviction policies only: the lock and tag tests are skipped

    @pytest.fixture
    def backend(self) -> CachetoolsBackend:
        return CachetoolsBackend(cachetools.LRUCache(maxsize=100))


def test_each_entry_expires_after_its_own_ttl() -> None:
    clock = FakeClock()
    store = CachetoolsBackend(cachetools.LRUCache(maxsize=10), clock=clock)
    store.set("short", b"s", 5)
    store.set("long", b"l", 50)
    store.set("forever", b"f", None)
    clock.advance(5)
    assert store.get_many(["short", "long", "forever"]) == [None, b"l", b"f"]
    assert store.delete("short") == 0, "an expired entry is not counted as deleted"
    clock.advance(1000)
    assert store.get_many(["long", "forever"]) == [None, b"f"]


def test_the_cache_keeps_what_lru_eviction_keeps() -> None:
    cache = Cache(CachetoolsBackend(cachetools.LRUCache(maxsize=2)), namespace="lru", ttl=60)
    loads: list[int] = []

    @cache.cached()
    def square(x: int) -> int:
        loads.append(x)
        return x * x

    square(1)
    square(2)
    square(1)  # 1 is now the most recently used
    square(3)  # evicts 2, the least recently used
    square(1)
    square(2)
    assert loads == [1, 2, 3, 2]


def test_anything_but_a_cachetools_cache_is_refused_with_the_fix() -> None:
    with pytest.raises(TypeError, match=r"cachetools\.LRUCache"):
        CachetoolsBackend({})  # type: ignore[arg-type]
