"""The cache on the real Redis: contract, behaviour, cross-process stampede, faults."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from scalepatterns._direct_redis import DirectConnections
from scalepatterns.cache import Cache
from scalepatterns.cache.redis_backend import AsyncRedisBackend, RedisBackend, connect
from scalepatterns.cache.testing import AsyncBackendContract, BackendContract
from scalepatterns.outage import OutageGuard
from tests.support.servers import RedisServer, TcpProxy

pytestmark = pytest.mark.redis


@pytest.fixture
def client(redis_url: str, unique_name: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    keys = list(client.scan_iter(f"{unique_name}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


class TestRealRedisBackend(BackendContract):
    locking = tagging = True

    @pytest.fixture
    def backend(self, client: redis.Redis) -> Iterator[RedisBackend]:
        backend = RedisBackend(client)
        yield backend
        keys = list(client.scan_iter(f"{self.key('')}*", count=1000))
        if keys:
            client.delete(*keys)


class TestRealAsyncRedisBackend(AsyncBackendContract):
    locking = tagging = True

    @pytest.fixture
    def async_backend(self, client: redis.Redis, redis_url: str) -> Iterator[AsyncRedisBackend]:
        yield AsyncRedisBackend(redis.asyncio.Redis.from_url(redis_url))
        keys = list(client.scan_iter(f"{self.key('')}*", count=1000))
        if keys:
            client.delete(*keys)


def test_hit_miss_tags_namespace_and_get_many_on_real_redis(
    client: redis.Redis, unique_name: str
) -> None:
    cache = Cache(RedisBackend(client), namespace=unique_name, ttl=60)
    loads: list[int] = []

    @cache.cached(tags=lambda n: [f"parity:{n % 2}"])
    def square(n: int) -> int:
        loads.append(n)
        return n * n

    assert [square(n) for n in (1, 2, 1, 2)] == [1, 4, 1, 4]
    assert loads == [1, 2]
    commands: list[str] = []
    original, direct = client.execute_command, DirectConnections.for_client(client)
    assert direct is not None
    original_direct = direct.call

    def spy(*args: Any, **kwargs: Any) -> Any:
        commands.append(str(args[0]))
        return original(*args, **kwargs)

    def direct_spy(command: bytes) -> Any:
        commands.append(command.split(b"\r\n")[2].decode())  # *<n>, $<len>, the name
        return original_direct(command)

    client.execute_command = spy  # type: ignore[method-assign]
    direct.call = direct_spy  # type: ignore[method-assign]
    try:
        assert square.get_many([1, 2, 3, 4]) == [1, 4, 9, 16]
    finally:
        del client.execute_command, direct.call
    assert commands.count("MGET") == 1  # on the direct connections
    assert "GET" not in commands
    assert loads == [1, 2, 3, 4]
    cache.invalidate_tags("parity:1")
    square(1)
    square(2)
    assert loads == [1, 2, 3, 4, 1]
    cache.invalidate_namespace()
    square(2)
    assert loads == [1, 2, 3, 4, 1, 2]


def test_async_redis_backend_matches_sync(redis_url: str, unique_name: str) -> None:
    async def scenario() -> tuple[list[int], list[str]]:
        aclient = AsyncRedisBackend(
            __import__("redis.asyncio", fromlist=["Redis"]).Redis.from_url(redis_url)
        )
        cache = Cache(aclient, namespace=unique_name, ttl=60)
        loads: list[str] = []

        @cache.cached()
        async def upper(s: str) -> str:
            loads.append(s)
            await asyncio.sleep(0.01)
            return s.upper()

        results = await asyncio.gather(*(upper("a") for _ in range(20)))
        results.append(await upper("a"))
        await upper.invalidate("a")
        results.append(await upper("a"))
        await aclient.aclose()
        return [len(results)], loads

    (count,), loads = asyncio.run(scenario())
    assert count == 22
    assert loads == ["a", "a"]


@pytest.mark.parametrize("local_ttl", [None, 5.0], ids=["redis", "two-tier"])
def test_cache_redis_takes_a_redis_asyncio_client(
    redis_url: str, unique_name: str, local_ttl: float | None
) -> None:
    """Its command methods are plain functions returning coroutines: it was taken for a
    sync client and every call failed on a coroutine."""
    import redis.asyncio as aioredis

    async def scenario() -> list[str]:
        client = aioredis.Redis.from_url(redis_url)
        cache = Cache.redis(client, namespace=unique_name, ttl=60, local_ttl=local_ttl)
        loads: list[str] = []

        @cache.cached()
        async def upper(s: str) -> str:
            loads.append(s)
            return s.upper()

        assert [await upper("a") for _ in range(3)] == ["A"] * 3
        assert await client.exists(*[k async for k in client.scan_iter(f"{unique_name}*")])
        await upper.invalidate("a")
        assert await upper("a") == "A"
        assert cache.backend_errors == 0
        await cache.aclose()
        await client.aclose()
        return loads

    assert asyncio.run(scenario()) == ["a", "a"]


def _stampede_worker(url: str, namespace: str, counter: str, start_at: float) -> str:
    cache = Cache(RedisBackend(connect(url)), namespace=namespace, ttl=60)

    @cache.cached(name="expensive")
    def expensive(key: str) -> str:
        cache.backend.client.incr(counter)  # type: ignore[attr-defined]
        time.sleep(0.3)
        return key * 2

    while time.time() < start_at:
        time.sleep(0.001)
    return expensive("cold")


@pytest.mark.slow
def test_four_processes_on_a_cold_key_load_once(redis_url: str, unique_name: str) -> None:
    client = redis.Redis.from_url(redis_url)
    counter = f"{unique_name}:loader-runs"
    ctx = multiprocessing.get_context("spawn")
    try:
        with ctx.Pool(4) as pool:
            start_at = time.time() + 3.0  # after every worker has imported
            results = pool.starmap(
                _stampede_worker, [(redis_url, unique_name, counter, start_at)] * 4
            )
        assert results == ["coldcold"] * 4
        assert int(client.get(counter) or 0) == 1
    finally:
        keys = list(client.scan_iter(f"{unique_name}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.mark.slow
def test_killed_redis_keeps_answering_and_caching_resumes_after_restart(
    throwaway_redis: RedisServer,
) -> None:
    cache = Cache.redis(throwaway_redis.url, namespace="fault", ttl=60, socket_timeout=0.2)
    cache.guard.cooldown = 0.2
    loads: list[int] = []

    @cache.cached()
    def double(n: int) -> int:
        loads.append(n)
        return n * 2

    assert [double(n) for n in range(5)] == [0, 2, 4, 6, 8]
    assert [double(n) for n in range(5)] == [0, 2, 4, 6, 8]
    assert len(loads) == 5  # cached in Redis

    throwaway_redis.kill()
    for _ in range(3):
        assert [double(n) for n in range(5)] == [0, 2, 4, 6, 8]
    assert cache.guard.is_open
    assert cache.backend_errors >= 1

    throwaway_redis.start()  # same port, empty: the next probe closes the guard
    deadline = time.monotonic() + 10
    while cache.guard.is_open and time.monotonic() < deadline:
        time.sleep(0.05)
        double(99)
    assert not cache.guard.is_open
    before = len(loads)
    assert double(7) == 14
    assert double(7) == 14
    assert double(7) == 14
    assert len(loads) == before + 1  # cached again
    cache.close()


def test_invalidations_made_while_redis_is_unreachable_reach_it_when_it_answers(
    throwaway_redis: RedisServer,
) -> None:
    """Redis lives on, cut off: what it should delete waits in this process, not in Redis."""
    direct = redis.Redis(port=throwaway_redis.port)
    with TcpProxy(throwaway_redis.port) as proxy:
        cache = Cache.redis(
            f"redis://127.0.0.1:{proxy.port}/0",
            namespace="cut",
            socket_timeout=0.2,
            guard=OutageGuard(3, 0.2),
        )
        state = {"a": 1, "b": 1}

        @cache.cached(ttl=3600, tags=lambda key: [key])
        def read(key: str) -> int:
            return state[key]

        assert [read("a"), read("b")] == [1, 1]
        entries = [k for k in direct.keys("cut:*") if b"__" not in k]
        assert len(entries) == 2
        proxy.block()
        state.update(a=2, b=2)
        read.invalidate("a")
        assert cache.invalidate_tags("b") == 0
        assert cache.unsent_invalidations == 2
        assert direct.exists(*entries) == 2  # nothing reached Redis
        assert [read("a"), read("b")] == [2, 2]  # the function answers meanwhile
        proxy.unblock()
        deadline = time.monotonic() + 10
        while cache.unsent_invalidations and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cache.unsent_invalidations == 0
        assert direct.exists(*entries) == 0
        cache.close()
    direct.close()


def test_two_tier_drops_its_memory_tier_when_redis_py_reconnects_the_subscriber_itself(
    throwaway_redis: RedisServer,
) -> None:
    """redis-py's default client retries: its pub/sub reconnects and subscribes again
    inside `get_message`, and messages published meanwhile are lost all the same."""
    direct = redis.Redis(port=throwaway_redis.port)
    channel = b"silent:__invalidate__"
    with TcpProxy(throwaway_redis.port) as proxy:
        client = redis.Redis(port=proxy.port)  # redis-py's default retry policy
        cache = Cache.two_tier(client, namespace="silent", local_ttl=300)

        @cache.cached()
        def square(n: int) -> int:
            return n * n

        def subscribed() -> bool:
            return bool(direct.pubsub_numsub(channel) == [(channel, 1)])

        deadline = time.monotonic() + 10
        while not subscribed() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [square(n) for n in range(3)] == [0, 1, 4]
        assert cache.local is not None
        assert len(cache.local) == 3
        proxy.cut()  # the subscriber's connection drops; redis-py makes a new one
        deadline = time.monotonic() + 10
        while len(cache.local) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(cache.local) == 0
        assert subscribed()
        cache.close()
        client.close()
    direct.close()


def test_two_tier_invalidation_reaches_another_process_memory_tier(
    redis_url: str, unique_name: str
) -> None:
    caches = [Cache.two_tier(redis_url, namespace=unique_name, local_ttl=300) for _ in range(2)]
    state = {"email": "old@example.com"}
    fns = []
    for cache in caches:

        @cache.cached(name="profile")
        def profile(user_id: int) -> str:
            return state["email"]

        fns.append(profile)
    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            counts = dict(client.pubsub_numsub(caches[0].channel))
            if counts.get(caches[0].channel.encode(), 0) >= 2:
                break
            time.sleep(0.02)
        assert fns[0](1) == "old@example.com"
        assert fns[1](1) == "old@example.com"  # now in process 2's memory tier
        state["email"] = "new@example.com"
        fns[0].invalidate(1)
        deadline = time.monotonic() + 10
        while fns[1](1) != "new@example.com" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fns[1](1) == "new@example.com"
    finally:
        for cache in caches:
            cache.close()
        keys = list(client.scan_iter(f"{unique_name}*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_a_loader_that_outlived_its_lock_cannot_release_the_next_owners(
    client: redis.Redis, unique_name: str
) -> None:
    backend = RedisBackend(client)
    key = f"{unique_name}:lock"
    assert backend.acquire_lock(key, "slow-loader", 0.05)
    deadline = time.monotonic() + 5
    while client.exists(key) and time.monotonic() < deadline:
        time.sleep(0.01)  # the slow loader's lock expires
    assert backend.acquire_lock(key, "next-owner", 30)
    assert not backend.release_lock(key, "slow-loader")
    assert client.get(key) == b"next-owner"
    assert backend.release_lock(key, "next-owner")


@pytest.mark.slow
def test_async_function_survives_a_killed_redis_and_resumes(
    throwaway_redis: RedisServer,
) -> None:
    async def scenario() -> tuple[list[int], int, bool]:
        cache = Cache.redis(throwaway_redis.url, namespace="afault", ttl=60, socket_timeout=0.2)
        cache.guard.cooldown = 0.2
        loads: list[int] = []

        @cache.cached()
        async def triple(n: int) -> int:
            loads.append(n)
            return n * 3

        answers = [await triple(n) for n in (1, 2, 1, 2)]
        throwaway_redis.kill()
        answers += [await triple(n) for n in (1, 2, 1, 2)]
        opened = cache.guard.is_open
        throwaway_redis.start()
        deadline = time.monotonic() + 10
        while cache.guard.is_open and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            await triple(99)
        before = len(loads)
        answers += [await triple(5) for _ in range(3)]
        await cache.aclose()
        return answers, len(loads) - before, opened

    answers, new_loads, opened = asyncio.run(scenario())
    assert answers == [3, 6, 3, 6, 3, 6, 3, 6, 15, 15, 15]
    assert opened
    assert new_loads == 1


@pytest.mark.slow
def test_a_frozen_redis_costs_a_few_timeouts_then_nothing(throwaway_redis: RedisServer) -> None:
    import signal

    cache = Cache.redis(throwaway_redis.url, namespace="slow", ttl=60, socket_timeout=0.2)
    loads: list[int] = []

    @cache.cached()
    def inc(n: int) -> int:
        loads.append(n)
        return n + 1

    assert inc(1) == 2
    cache.guard.cooldown = 1.0
    proc = throwaway_redis._proc  # our own throw-away server: freeze it (SIGSTOP)
    assert proc is not None
    proc.send_signal(signal.SIGSTOP)
    try:
        answers = [inc(n) for n in range(20)]
        assert answers == [n + 1 for n in range(20)]
        assert cache.guard.is_open
        assert cache.backend_errors <= 4  # timeouts until the guard opened, then no I/O
    finally:
        proc.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 10
    while cache.guard.is_open and time.monotonic() < deadline:
        time.sleep(0.02)
        inc(100)
    assert not cache.guard.is_open
    cache.close()


def test_a_stale_key_is_refreshed_by_one_process_not_each(redis_url: str, unique_name: str) -> None:
    """Background refreshes take the Redis lock: caches that each served the stale value
    (as four processes would) leave one of them to load it."""
    from scalepatterns.clock import FakeClock

    clock = FakeClock()
    loads: list[int] = []
    lock = threading.Lock()
    caches = [Cache.redis(redis_url, namespace=unique_name, clock=clock) for _ in range(4)]
    reads = []
    for cache in caches:

        @cache.cached(name="report", ttl=10, stale_ttl=600)
        def report(day: int) -> str:
            with lock:
                loads.append(day)
            time.sleep(0.3)  # long enough for every cache to see the stale entry
            return f"report {day} #{len(loads)}"

        reads.append(report)
    assert reads[0](1) == "report 1 #1"
    clock.advance(11)  # stale for everyone
    threads = [threading.Thread(target=read, args=(1,)) for read in reads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for cache in caches:
        assert cache.wait_background(timeout=10)
    assert len(loads) == 2  # the first load and one refresh
    assert reads[3](1) == "report 1 #2"
    for cache in caches:
        cache.close()
