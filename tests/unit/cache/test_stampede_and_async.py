"""Stampede control in one process (threads and asyncio tasks), cancellation, two-tier."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import fakeredis
import pytest

from scalepatterns.cache import Cache, CacheBackendError, MemoryBackend
from scalepatterns.cache.redis_backend import AsyncRedisBackend, RedisBackend
from scalepatterns.clock import FakeClock
from scalepatterns.errors import ConfigurationError


@pytest.mark.parametrize("engine", ["memory", "fakeredis"])
def test_64_threads_on_a_cold_key_load_once(engine: str) -> None:
    cache = (
        Cache.memory(ttl=60)
        if engine == "memory"
        else Cache(RedisBackend(fakeredis.FakeRedis()), namespace="stampede", ttl=60)
    )
    runs = []
    release = threading.Event()

    @cache.cached()
    def slow(key: str) -> str:
        runs.append(key)
        release.wait(5)
        return key.upper()

    barrier = threading.Barrier(64)
    results: list[str] = []

    def worker() -> None:
        barrier.wait()
        results.append(slow("cold"))

    threads = [threading.Thread(target=worker) for _ in range(64)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while not runs and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # let every thread reach the wait
    release.set()
    for t in threads:
        t.join(10)
    assert runs == ["cold"]
    assert results == ["COLD"] * 64


def test_waiters_share_the_leaders_error_instead_of_retrying() -> None:
    cache = Cache.memory(ttl=60)
    runs = []
    release = threading.Event()

    @cache.cached()
    def failing(key: str) -> str:
        runs.append(key)
        release.wait(5)
        raise LookupError(key)

    errors: list[BaseException] = []

    def worker() -> None:
        try:
            failing("k")
        except LookupError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    release.set()
    for t in threads:
        t.join(10)
    assert len(runs) == 1
    assert len(errors) == 8


def test_waiters_wake_only_for_their_own_key() -> None:
    cache = Cache.memory(ttl=60)
    gate = {"a": threading.Event(), "b": threading.Event()}

    @cache.cached()
    def load(key: str) -> str:
        gate[key].wait(5)
        return key

    done: dict[str, str] = {}
    threads = [threading.Thread(target=lambda k=k: done.setdefault(k, load(k))) for k in ("a", "b")]
    for t in threads:
        t.start()
    gate["b"].set()
    threads[1].join(5)
    assert done == {"b": "b"}  # "a" is still loading and nobody waiting on it woke up
    gate["a"].set()
    threads[0].join(5)
    assert done == {"a": "a", "b": "b"}


def test_asyncio_stampede_loads_once_and_cancelling_a_waiter_keeps_the_load() -> None:
    cache = Cache.memory(ttl=60)
    runs = []

    @cache.cached()
    async def slow(key: str) -> str:
        runs.append(key)
        await asyncio.sleep(0.05)
        return key.upper()

    async def scenario() -> list[str]:
        first = asyncio.create_task(slow("k"))
        others = [asyncio.create_task(slow("k")) for _ in range(20)]
        await asyncio.sleep(0.01)
        first.cancel()  # the caller that started the load gives up
        results = await asyncio.gather(*others)
        with pytest.raises(asyncio.CancelledError):
            await first
        return results

    assert asyncio.run(scenario()) == ["K"] * 20
    assert runs == ["k"]
    assert slow.cache_info().loads == 1


def test_async_results_are_cached_not_coroutines() -> None:
    cache = Cache.memory(ttl=60)

    @cache.cached()
    async def value(x: int) -> int:
        return x * 2

    async def twice() -> tuple[int, int]:
        return await value(2), await value(2)

    assert asyncio.run(twice()) == (4, 4)
    assert asyncio.run(value(2)) == 4
    assert value.cache_info().hits == 2


def test_two_tier_invalidation_reaches_other_processes_memory_tier() -> None:
    server = fakeredis.FakeServer()
    caches = [
        Cache.two_tier(fakeredis.FakeRedis(server=server), namespace="tt", local_ttl=60)
        for _ in range(2)
    ]
    state = {"v": 1}
    fns = []
    for cache in caches:

        @cache.cached(name="profile")
        def profile(user_id: int) -> int:
            return state["v"]

        fns.append(profile)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and server_subscribers(caches[0]) < 2:
            time.sleep(0.02)
        assert fns[0](1) == 1
        assert fns[1](1) == 1  # from Redis, now also in process 2's memory tier
        state["v"] = 2
        fns[0].invalidate(1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and fns[1](1) != 2:
            time.sleep(0.02)
        assert fns[1](1) == 2
    finally:
        for cache in caches:
            cache.close()


def server_subscribers(cache: Cache) -> int:
    client = cache.backend.client
    counts = client.pubsub_numsub(cache.channel)
    return int(counts[0][1]) if counts else 0


def test_sensitive_functions_refuse_shared_backends() -> None:
    shared = Cache(RedisBackend(fakeredis.FakeRedis()))
    with pytest.raises(ConfigurationError, match="sensitive"):
        shared.cached(sensitive=True)
    Cache.memory().cached(sensitive=True)(lambda: 1)


def test_bad_configuration_is_refused_at_construction() -> None:
    with pytest.raises(ConfigurationError):
        Cache.memory(ttl=-1)
    with pytest.raises(ConfigurationError):
        Cache.memory(maxsize=0)
    with pytest.raises(ConfigurationError):
        Cache.memory(namespace="a:b")
    with pytest.raises(ConfigurationError):
        Cache.memory().cached(stale_ttl=-1)
    with pytest.raises(ConfigurationError):
        Cache(RedisBackend(fakeredis.FakeRedis()), plain_values=True).cached(stale_ttl=5)
    with pytest.raises(ConfigurationError):
        Cache.memory().cached(key="user:{nope}")(lambda user_id: user_id)
    with pytest.raises(TypeError):
        Cache(object())
    for bad in (float("inf"), float("nan"), True):  # Redis can set no such expiry
        with pytest.raises(ConfigurationError, match="finite"):
            Cache.memory(ttl=bad)
        with pytest.raises(ConfigurationError, match="finite"):
            Cache.memory().cached(ttl=bad)
        with pytest.raises(ConfigurationError, match="lock_ttl"):
            Cache(RedisBackend(fakeredis.FakeRedis()), lock_ttl=bad)


def test_methods_leave_self_out_of_the_key() -> None:
    cache = Cache.memory()
    loads = []

    class Repo:
        @cache.cached()
        def find(self, item_id: int) -> int:
            loads.append(item_id)
            return item_id

    assert Repo().find(1) == Repo().find(1) == 1
    assert loads == [1]
    Repo.find.invalidate(1)
    Repo().find(1)
    assert loads == [1, 1]
    repo = Repo()
    assert Repo.find.refresh(repo, 1) == 1  # the loader needs the instance: first
    assert Repo.find.get_many([(repo, 2), (repo, 3)]) == [2, 3]
    assert loads == [1, 1, 1, 2, 3]
    with pytest.raises(TypeError, match="take the instance first"):
        repo.find.refresh(1)  # type: ignore[call-arg]


def test_template_keys_are_readable_and_plain_values_interoperate() -> None:
    redis = fakeredis.FakeRedis()
    cache = Cache(RedisBackend(redis), namespace="svc", plain_values=True, jitter=0)

    @cache.cached(key="user:{user_id}")
    def user(user_id: int) -> dict[str, object]:
        return {"id": user_id, "name": "Ada"}

    user(42)
    assert redis.get("svc:user:42") == b'{"id":42,"name":"Ada"}'
    redis.set("svc:user:7", b'{"id":7,"name":"written by a Go service"}')
    assert user(7) == {"id": 7, "name": "written by a Go service"}


def test_argument_text_cannot_forge_another_key() -> None:
    redis = fakeredis.FakeRedis()
    cache = Cache(RedisBackend(redis), namespace="f")

    @cache.cached(name="g")
    def g(a: str, b: str = "") -> str:
        return a + "|" + b

    g('x", "y')
    g("x", "y")
    keys = sorted(k.decode() for k in redis.keys("f:g:*") if not k.endswith(b"lock"))
    assert len(keys) == 2


def test_dead_backend_emits_backend_errors_and_still_answers() -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    cache = Cache(RedisBackend(fakeredis.FakeRedis(server=server)), namespace="dead")
    seen = []
    cache.listeners.add(seen.append, CacheBackendError)
    try:

        @cache.cached()
        def f(x: int) -> int:
            return x + 1

        assert [f(i) for i in range(50)] == list(range(1, 51))
        assert cache.guard.is_open
        assert cache.backend_errors == 3  # one version read, two entry reads
    finally:
        cache.listeners.clear()
    assert len(seen) == 3


def test_memory_backend_passed_in_is_used() -> None:
    store = MemoryBackend(5)
    cache = Cache(store)

    @cache.cached()
    def f(x: int) -> int:
        return x

    for i in range(10):
        f(i)
    assert len(store) == 5
    assert f.cache_info().currsize == 5


def test_asyncio_only_cache_invalidates_tags_and_namespace() -> None:
    async def scenario() -> list[int]:
        server = fakeredis.FakeServer()
        cache = Cache(AsyncRedisBackend(fakeredis.FakeAsyncRedis(server=server)), namespace="a")
        loads: list[int] = []

        @cache.cached(tags=lambda n: [f"n:{n}"])
        async def f(n: int) -> int:
            loads.append(n)
            return n

        await f(1)
        await f(2)
        assert await cache.ainvalidate_tags("n:1") == 1
        await f(1)
        await f(2)
        await cache.ainvalidate_namespace()
        await f(2)
        return loads

    assert asyncio.run(scenario()) == [1, 2, 1, 2]
    with pytest.raises(ConfigurationError):
        Cache(AsyncRedisBackend(fakeredis.FakeAsyncRedis())).cached(lambda: 1)


def test_a_waiter_takes_over_when_the_lock_holder_stored_nothing() -> None:
    from scalepatterns.clock import FakeClock

    class HeldOnce(RedisBackend):
        attempts = 0

        def acquire_lock(self, key: str, token: str, ttl: float) -> bool:
            self.attempts += 1
            if self.attempts == 1:
                return False  # another process holds it... and then fails without storing
            return super().acquire_lock(key, token, ttl)

    clock = FakeClock()
    backend = HeldOnce(fakeredis.FakeRedis())
    cache = Cache(backend, namespace="takeover", clock=clock, lock_wait=10)

    @cache.cached()
    def f(x: int) -> int:
        return x

    assert f(1) == 1
    assert backend.attempts == 2
    assert clock.monotonic() < 1.0  # took over after one short pause, not after lock_wait


def test_signed_pickle_is_opt_in_and_planted_pickle_is_refused() -> None:
    import pickle

    from scalepatterns.serializers import SignedPickleSerializer

    redis = fakeredis.FakeRedis()
    signed = Cache(
        RedisBackend(redis),
        namespace="pk",
        serializer=SignedPickleSerializer(b"a-secret-of-16-bytes+"),
    )

    @signed.cached(name="tags")
    def tags(x: int) -> set[int]:
        return {x, x + 1}

    assert tags(1) == {1, 2}
    assert tags(1) == {1, 2}
    assert tags.cache_info().hits == 1

    loads: list[int] = []
    plain = Cache(RedisBackend(redis), namespace="pk2")

    @plain.cached(name="user")
    def user(x: int) -> int:
        loads.append(x)
        return x

    redis.set("pk2:user:[1]", pickle.dumps({"evil": True}))
    assert user(1) == 1  # planted bytes are not JSON: a miss, never unpickled
    assert loads == [1]


def test_a_namespace_bump_reaches_other_processes_within_version_ttl() -> None:
    from scalepatterns.clock import FakeClock

    server = fakeredis.FakeServer()
    clock = FakeClock()
    caches = [
        Cache(
            RedisBackend(fakeredis.FakeRedis(server=server)),
            namespace="v",
            clock=clock,
            version_ttl=1.0,
        )
        for _ in range(2)
    ]
    loads: list[int] = []
    fns = []
    for cache in caches:

        @cache.cached(name="f")
        def f(x: int) -> int:
            loads.append(x)
            return x

        fns.append(f)
    fns[0](1)
    fns[1](1)
    assert loads == [1]
    caches[0].invalidate_namespace()
    fns[1](1)  # process 2 still trusts version 0 for up to version_ttl
    assert loads == [1]
    clock.advance(1.0)
    fns[1](1)
    assert loads == [1, 1]


def test_two_tier_copies_made_while_redis_is_down_live_only_local_ttl() -> None:
    from scalepatterns.clock import FakeClock

    server = fakeredis.FakeServer()
    clock = FakeClock()
    cache = Cache(
        RedisBackend(fakeredis.FakeRedis(server=server)),
        namespace="tt-down",
        local=MemoryBackend(100, clock=clock),
        local_ttl=5,
        ttl=3600,
        clock=clock,
    )
    loads: list[int] = []

    @cache.cached()
    def f(x: int) -> int:
        loads.append(x)
        return x

    server.connected = False
    for _ in range(5):
        f(1)  # Redis down: the memory tier still absorbs repeats
    assert loads == [1]
    clock.advance(6)  # past local_ttl: the copy is gone even though ttl is an hour
    f(1)
    assert loads == [1, 1]


def test_waiting_for_background_refreshes_honours_its_timeout() -> None:
    clock = FakeClock()
    cache = Cache.memory(ttl=10, jitter=0, clock=clock)
    release = threading.Event()
    loads: list[str] = []

    @cache.cached(stale_ttl=600)
    def read(key: str) -> str:
        loads.append(key)
        if key == "hung" and loads.count("hung") > 1:
            release.wait(10)  # the refresh of "hung" hangs
        return key

    read("hung")
    read("later")
    clock.advance(11)  # both stale
    read("hung")
    assert cache.wait_background(timeout=0.05) is False  # gave up instead of hanging
    read("later")  # a fresh pool takes new refreshes
    assert cache.wait_background(timeout=10) is True
    assert loads.count("later") == 2
    release.set()


def test_invalidation_while_redis_is_down_drops_the_memory_tier_and_costs_no_call() -> None:
    server = fakeredis.FakeServer()
    cache = Cache.two_tier(fakeredis.FakeRedis(server=server), namespace="down", local_ttl=60)
    loads: list[int] = []

    @cache.cached(tags=lambda x: ["all"])
    def f(x: int) -> int:
        loads.append(x)
        return x

    f(1)
    server.connected = False
    for _ in range(3):
        cache.invalidate_namespace()  # incr fails three times: the guard opens
    assert cache.guard.is_open
    errors = cache.backend_errors
    assert cache.invalidate_tags("all") == 0  # no shared key could be deleted...
    assert cache.unsent_invalidations == 2  # ...so the tag is kept, with the bump
    assert cache.invalidate_namespace() == 4  # the local version still moves on
    assert cache.backend_errors == errors  # skipped, not tried: no call while open
    f(1)
    assert loads == [1, 1]  # the memory tier was dropped all the same
    cache.close()


def test_a_namespace_bump_made_while_redis_was_down_reaches_it_afterwards() -> None:
    """Reading Redis's older version after the outage brought the invalidated entries back."""
    server = fakeredis.FakeServer()
    clock = FakeClock()
    cache = Cache(
        RedisBackend(fakeredis.FakeRedis(server=server)),
        namespace="bump",
        version_ttl=1.0,
        clock=clock,
    )
    state = {"v": "old"}

    @cache.cached(ttl=3600)
    def read(k: str) -> str:
        return state["v"]

    assert read("k") == "old"  # stored in Redis under version 0
    server.connected = False
    cache.invalidate_namespace()  # Redis unreachable: this process moves on alone
    state["v"] = "new"
    server.connected = True
    clock.advance(2.0)  # past version_ttl: the next call reads the version again
    assert read("k") == "new"
    # The bump reached Redis: every process sees it.
    assert fakeredis.FakeRedis(server=server).get("bump:__version__") == b"1"


def test_keys_do_not_collide_across_nested_types_closures_and_template_values() -> None:
    cache = Cache.memory()
    calls: list[object] = []

    @cache.cached()
    def nested(value: object) -> str:
        calls.append(value)
        return type(value[0]).__name__  # type: ignore[index]

    assert [nested((1,)), nested((True,)), nested((1.0,))] == ["int", "bool", "float"]

    def adder(n: int) -> Any:  # two closures: the same qualname, different results
        return cache.cached()(lambda items: sum(items) + n)

    add0, add100 = adder(0), adder(100)
    assert (add0([1, 2, 3]), add100([1, 2, 3])) == (6, 106)  # unhashable: the text key

    shared = Cache(RedisBackend(fakeredis.FakeRedis()), namespace="t")

    @shared.cached(key="{a}-{b}")
    def pair(a: str, b: str) -> str:
        return f"{a}|{b}"

    assert (pair("x-y", "z"), pair("x", "y-z")) == ("x-y|z", "x|y-z")

    @shared.cached(key="{name}")
    def named(name: str) -> str:
        return name

    assert named("__version__") == "__version__"

    @shared.cached()
    def echo(value: object) -> str:
        return repr(value)

    for a, b in (((1, 2), [1, 2]), ({1: "x"}, {"1": "x"})):  # one JSON text before
        assert (echo(a), echo(b)) == (repr(a), repr(b))
    assert echo({1: "x", "b": 2}) == repr({1: "x", "b": 2})  # mixed keys: sort_keys raised
    assert shared.backend.client.get("t:__version__") is None  # the value left it alone
    assert shared.backend_errors == 0
    with pytest.raises(ConfigurationError, match="'_'"):
        shared.cached(key="__{name}")(named)


def test_stale_hits_queue_one_background_refresh_while_the_pool_is_busy() -> None:
    clock = FakeClock()
    cache = Cache.memory(ttl=10, jitter=0, clock=clock)
    gate = threading.Event()
    loads: dict[str, int] = {}

    @cache.cached(stale_ttl=600)
    def read(key: str) -> str:
        loads[key] = loads.get(key, 0) + 1
        if loads[key] > 1 and key in "abcd":
            gate.wait(10)  # four slow refreshes hold the pool's four threads
        return key

    for key in "abcde":
        read(key)
    clock.advance(11)  # everything stale
    for key in "abcd":
        read(key)
    for _ in range(10):
        read("e")  # its refresh waits in the queue: not "in flight" yet
    gate.set()
    assert cache.wait_background(timeout=10)
    assert loads["e"] == 2  # one refresh queued, not ten


def test_the_tag_index_forgets_entries_the_memory_tier_evicted() -> None:
    cache = Cache.memory(maxsize=100)

    @cache.cached(tags=lambda x: [f"group:{x % 7}"])
    def read(x: int) -> int:
        return x

    for x in range(20_000):
        read(x)
    index = cache._namespace.index.tags  # internal: the bound is what this test is about
    assert sum(map(len, index.values())) <= 2 * 100  # bounded, not 20,000
    assert cache.invalidate_tags("group:3") <= 2 * (100 // 7 + 1)  # not the 2,857 ever tagged
