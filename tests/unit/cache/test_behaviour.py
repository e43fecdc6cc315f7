"""One behavioural suite over every engine (memory, fakeredis, two-tier), sync and async."""

from __future__ import annotations

import pytest

from scalepatterns.cache import CacheBackendError, CacheLoad, CacheStale
from scalepatterns.errors import SerializationError
from tests.unit.cache.conftest import Harness


def test_hit_after_miss_and_bound_arguments_share_an_entry(h: Harness) -> None:
    def add(a: int, b: int = 2) -> int:
        return a + b

    fn = h.decorate(add)
    assert h.call(fn, 1) == 3
    assert h.call(fn, 1, b=2) == 3
    assert h.call(fn, a=1, b=2) == 3
    assert h.call(fn, 1, 2) == 3
    assert len(h.calls) == 1
    info = fn.cache_info()
    assert (info.hits, info.misses, info.loads) == (3, 1, 1)
    assert info.hit_ratio == 0.75


def test_one_string_and_true_are_different_keys(h: Harness) -> None:
    def ident(x: object) -> str:
        return repr(x)

    fn = h.decorate(ident)
    assert [h.call(fn, v) for v in (1, "1", True, 1.0)] == ["1", "'1'", "True", "1.0"]
    assert len(h.calls) == 4


def test_ttl_expiry_and_per_function_override(h: Harness) -> None:
    def value(x: int) -> int:
        return x

    fn = h.decorate(value, ttl=10)
    h.call(fn, 1)
    h.clock.advance(9)
    h.call(fn, 1)
    assert len(h.calls) == 1
    h.clock.advance(1.5)
    h.call(fn, 1)
    assert len(h.calls) == 2


def test_ttl_none_never_expires(h: Harness) -> None:
    fn = h.decorate(lambda x: x, ttl=None)
    h.call(fn, 1)
    h.clock.advance(10**7)
    h.call(fn, 1)
    assert len(h.calls) == 1


def test_invalidate_and_refresh(h: Harness) -> None:
    state = {"v": 1}

    def read(key: str) -> int:
        return state["v"]

    fn = h.decorate(read)
    assert h.call(fn, "k") == 1
    state["v"] = 2
    assert h.call(fn, "k") == 1
    h.run(fn.invalidate("k"))
    assert h.call(fn, "k") == 2
    state["v"] = 3
    assert h.run(fn.refresh("k")) == 3
    assert h.call(fn, "k") == 3
    assert len(h.calls) == 3


def test_negative_caching_has_its_own_ttl(h: Harness) -> None:
    def find(user_id: int) -> dict[str, int] | None:
        return None if user_id < 0 else {"id": user_id}

    fn = h.decorate(find, negative_ttl=5)
    assert h.call(fn, -1) is None
    assert h.call(fn, -1) is None
    assert len(h.calls) == 1
    h.clock.advance(6)
    assert h.call(fn, -1) is None
    assert len(h.calls) == 2
    h.call(fn, 7)
    h.clock.advance(6)
    h.call(fn, 7)
    assert len(h.calls) == 3


def test_unless_skips_caching_some_results(h: Harness) -> None:
    fn = h.decorate(lambda x: {"ok": x > 0}, unless=lambda r: not r["ok"])
    h.call(fn, 0)
    h.call(fn, 0)
    h.call(fn, 1)
    h.call(fn, 1)
    assert len(h.calls) == 3


def test_stale_while_revalidate_serves_then_refreshes(h: Harness) -> None:
    state = {"v": "old"}

    def read(k: str) -> str:
        return state["v"]

    fn = h.decorate(read, ttl=10, stale_ttl=30)
    assert h.call(fn, "k") == "old"
    state["v"] = "new"
    h.clock.advance(15)
    assert h.call(fn, "k") == "old"  # stale, a refresh runs behind it
    h.cache.wait_background()
    assert h.call(fn, "k") == "new"
    assert len(h.calls) == 2
    assert [e.reason for e in h.recorder.of_type(CacheStale)] == ["revalidate"]
    assert [e.early for e in h.recorder.of_type(CacheLoad)] == [False, True]


def test_stale_if_error_serves_the_old_value(h: Harness) -> None:
    state: dict[str, object] = {"v": "old"}

    def read(k: str) -> object:
        if isinstance(state["v"], Exception):
            raise state["v"]
        return state["v"]

    fn = h.decorate(read, ttl=10, stale_if_error=60)
    assert h.call(fn, "k") == "old"
    state["v"] = RuntimeError("database down")
    h.clock.advance(20)
    assert h.call(fn, "k") == "old"
    assert fn.cache_info().load_errors == 1
    h.clock.advance(60)
    with pytest.raises(RuntimeError, match="database down"):
        h.call(fn, "k")


def test_early_refresh_renews_a_hot_key_before_expiry(h: Harness) -> None:
    # A draw that refreshes early: -ln(1e-9) * 1s > 10s (through the cache's random seam).
    h.cache._random = lambda: 1e-9

    def slow(k: str) -> str:
        h.clock.advance(1.0)  # the load takes a second: XFetch's delta
        return k

    fn = h.decorate(slow, ttl=10, early_refresh=1.0)
    h.call(fn, "k")
    h.clock.advance(6)  # past a two-tier cache's 5 s memory tier; 5 s before expiry
    h.call(fn, "k")
    h.cache.wait_background()
    loads = h.recorder.of_type(CacheLoad)
    assert [e.early for e in loads] == [False, True]
    assert fn.cache_info().hits == 1


def test_tags_invalidate_together(h: Harness) -> None:
    def order(order_id: int, user_id: int) -> str:
        return f"{user_id}/{order_id}"

    fn = h.decorate(order, tags=lambda order_id, user_id: [f"user:{user_id}"])
    h.call(fn, 1, 7)
    h.call(fn, 2, 7)
    h.call(fn, 3, 8)
    h.cache.invalidate_tags("user:7")
    h.call(fn, 1, 7)
    h.call(fn, 2, 7)
    h.call(fn, 3, 8)
    assert h.calls == [(1, 7), (2, 7), (3, 8), (1, 7), (2, 7)]


def test_namespace_version_bump_drops_everything(h: Harness) -> None:
    fn = h.decorate(lambda x: x, name="plus")
    other = h.decorate(lambda x: -x, name="minus")
    h.call(fn, 1)
    h.call(other, 1)
    h.cache.invalidate_namespace()
    h.call(fn, 1)
    h.call(other, 1)
    assert len(h.calls) == 4


def test_get_many_loads_only_the_misses(h: Harness) -> None:
    def square(n: int) -> int:
        return n * n

    fn = h.decorate(square)
    h.call(fn, 2)
    assert h.run(fn.get_many([1, 2, 3])) == [1, 4, 9]
    assert h.calls == [(2,), (1,), (3,)]
    assert h.run(fn.get_many([1, 2, 3])) == [1, 4, 9]
    assert len(h.calls) == 3


def test_unhashable_arguments_still_cache(h: Harness) -> None:
    fn = h.decorate(sum)
    assert h.call(fn, [1, 2]) == 3
    assert h.call(fn, [1, 2]) == 3
    assert h.call(fn, [2, 1]) == 3
    assert len(h.calls) == 2


def test_loader_errors_propagate_and_are_not_cached(h: Harness) -> None:
    def boom(x: int) -> int:
        raise ValueError(x)

    fn = h.decorate(boom)
    for _ in range(2):
        with pytest.raises(ValueError):
            h.call(fn, 1)
    assert len(h.calls) == 2


def test_unserializable_value_names_function_and_type(h: Harness) -> None:
    if h.engine == "memory":
        pytest.skip("the memory tier keeps objects as they are")

    def make(x: int) -> object:
        return {1, 2}

    fn = h.decorate(make)
    with pytest.raises(SerializationError, match=r"make.*set"):
        h.call(fn, 1)


def test_garbage_entry_is_a_miss_and_deleted(h: Harness) -> None:
    if h.engine == "memory":
        pytest.skip("no bytes in the memory tier")
    fn = h.decorate(lambda x: x, name="garbage")
    key = "t:garbage:[5]"
    h.redis.set(key, b"\xffSP1garbage")
    assert h.call(fn, 5) == 5
    assert [e.operation for e in h.recorder.of_type(CacheBackendError)] == ["decode"]
    assert h.redis.get(key) != b"\xffSP1garbage"


def test_dead_backend_fails_open_and_breaker_skips_it(h: Harness) -> None:
    if h.engine == "memory":
        pytest.skip("nothing to kill")
    fn = h.decorate(lambda x: x * 10)
    h.server.connected = False  # every command now raises ConnectionError
    results = [h.call(fn, i % 3) for i in range(20)]
    assert results == [(i % 3) * 10 for i in range(20)]
    errors = h.recorder.of_type(CacheBackendError)
    assert 1 <= len(errors) <= 4  # the guard opened after 3 and then skipped Redis
    assert errors[-1].breaker_open
    h.server.connected = True
    h.clock.advance(6)  # cool-down over: one probe, then caching resumes
    before = len(h.calls)
    h.call(fn, 1)
    h.call(fn, 1)
    h.call(fn, 1)
    assert len(h.calls) - before <= 2
