"""The sync and async sides of the cache cannot drift apart unseen.

Every public sync/async pair offers the same methods with the same parameters, and the
same scenario sends the same commands to the backend, returns the same values and counts
the same way from a `def` function and from an `async def` one.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest

from scalepatterns.cache import (
    AsyncCacheBackend,
    AsyncLockingBackend,
    AsyncTaggingBackend,
    Cache,
    CacheBackend,
    LockingBackend,
    MemoryBackend,
    TaggingBackend,
)
from scalepatterns.cache._drivers import AsyncDriver, SyncDriver
from scalepatterns.cache.flight import AsyncSingleFlight, SingleFlight
from scalepatterns.cache.redis_backend import AsyncRedisBackend, RedisBackend
from scalepatterns.clock import FakeClock
from scalepatterns.events import EventRecorder, Listeners

# (sync, async, methods only the sync side has, methods only the async side has)
PAIRS: list[tuple[type, type, set[str], set[str]]] = [
    (RedisBackend, AsyncRedisBackend, {"close"}, {"aclose"}),
    (CacheBackend, AsyncCacheBackend, set(), set()),
    (LockingBackend, AsyncLockingBackend, set(), set()),
    (TaggingBackend, AsyncTaggingBackend, set(), set()),
    # The sync hit paths leave through these two (see _hit_paths.py).
    (SyncDriver, AsyncDriver, {"after_get", "skipped"}, set()),
    (SingleFlight, AsyncSingleFlight, set(), {"start"}),
]
NOT_AWAITED = {"in_flight", "start"}


def public_methods(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and callable(member)
    }


def same_parameters(sync: Callable[..., Any], async_: Callable[..., Any]) -> None:
    ours, theirs = inspect.signature(sync).parameters, inspect.signature(async_).parameters
    assert list(ours) == list(theirs), async_.__qualname__
    for name, parameter in theirs.items():
        assert (ours[name].kind, ours[name].default) == (parameter.kind, parameter.default), (
            f"{async_.__qualname__}({name})"
        )


@pytest.mark.parametrize(
    ("sync", "async_", "only_sync", "only_async"), PAIRS, ids=lambda p: getattr(p, "__name__", "")
)
def test_the_async_twin_has_the_same_methods_and_parameters(
    sync: type, async_: type, only_sync: set[str], only_async: set[str]
) -> None:
    ours, theirs = public_methods(sync), public_methods(async_)
    assert set(ours) - only_sync == set(theirs) - only_async
    for name in set(ours) & set(theirs):
        same_parameters(ours[name], theirs[name])
        assert not inspect.iscoroutinefunction(ours[name]), name
        assert inspect.iscoroutinefunction(theirs[name]) is (name not in NOT_AWAITED), name


def test_each_cache_method_has_an_async_form_with_the_same_parameters() -> None:
    methods = public_methods(Cache)
    pairs = {name: f"a{name}" for name in methods if f"a{name}" in methods}
    assert pairs == {
        "close": "aclose",
        "invalidate_namespace": "ainvalidate_namespace",
        "invalidate_tags": "ainvalidate_tags",
    }
    for sync, async_ in pairs.items():
        same_parameters(methods[sync], methods[async_])
        assert inspect.iscoroutinefunction(methods[async_])


def test_a_cached_def_and_async_def_offer_the_same_methods() -> None:
    cache = Cache.memory()

    def f(x: int, y: int = 0) -> int:
        return x + y

    async def af(x: int, y: int = 0) -> int:
        return x + y

    sync, async_ = cache.cached(f), cache.cached(af)
    names = ("invalidate", "refresh", "get_many", "cache_info", "cache", "__wrapped__")
    assert all(hasattr(sync, n) and hasattr(async_, n) for n in names)
    assert inspect.signature(sync) == inspect.signature(async_)
    assert inspect.iscoroutinefunction(async_)
    for name in ("invalidate", "refresh", "get_many"):
        result = getattr(async_, name)([(1,)]) if name == "get_many" else getattr(async_, name)(1)
        assert inspect.iscoroutine(result), name
        asyncio.run(result)


# -- the same scenario from both sides ------------------------------------------------------


class Recording:
    """A shared backend (a `MemoryBackend` holding bytes) that notes every command."""

    name = "recording"

    def __init__(self, clock: FakeClock) -> None:
        self.store = MemoryBackend(clock=clock)
        self.commands: list[tuple[Any, ...]] = []
        self.down = False

    def _note(self, *command: Any) -> None:
        self.commands.append(command)
        if self.down:
            raise ConnectionError("down")

    def get(self, key: str) -> bytes | None:
        self._note("get", key)
        return self.store.get(key)

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        self._note("get_many", tuple(keys))
        return self.store.get_many(keys)

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._note("set", key, ttl)
        self.store.set(key, value, ttl)

    def delete(self, *keys: str) -> int:
        self._note("delete", keys)
        return self.store.delete(*keys)

    def incr(self, key: str) -> int:
        self._note("incr", key)
        return self.store.incr(key)

    def acquire_lock(self, key: str, token: str, ttl: float) -> bool:
        self._note("acquire_lock", key, ttl)  # the token is random: left out
        return self.store.acquire_lock(key, token, ttl)

    def release_lock(self, key: str, token: str) -> bool:
        self._note("release_lock", key)
        return self.store.release_lock(key, token)

    def tag(self, key: str, tags: list[str], ttl: float | None) -> None:
        self._note("tag", key, tuple(tags), ttl)
        self.store.tag(key, tags, ttl)

    def pop_tagged(self, tags: list[str]) -> list[str]:
        self._note("pop_tagged", tuple(tags))
        return self.store.pop_tagged(tags)


class Awaited:
    """The asyncio form of a backend: each method awaits the sync one."""

    name = "recording"

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._backend, name)

        async def call(*args: Any) -> Any:
            return method(*args)

        return call


class Side:
    """One cache and one cached function, `def` or `async def`, on a recording backend."""

    def __init__(self, mode: str, *, local: bool) -> None:
        self.mode = mode
        self.clock = FakeClock(start=1000.0)
        self.backend = Recording(self.clock)
        self.listeners = Listeners()
        self.recorder = EventRecorder()
        self.listeners.add(self.recorder)
        self.cache = Cache(
            self.backend if mode == "sync" else Awaited(self.backend),
            namespace="p",
            ttl=60,
            jitter=0.0,
            local=MemoryBackend(clock=self.clock) if local else None,
            local_ttl=5,
            clock=self.clock,
            listeners=self.listeners,
        )
        self.loads: list[int] = []
        loads = self.loads

        def read(n: int) -> int:
            loads.append(n)
            return n * 10

        tags = {"tags": lambda n: [f"group:{n % 2}"], "stale_ttl": 30.0}
        if mode == "sync":
            self.fn = self.cache.cached(**tags)(read)
        else:

            async def aread(n: int) -> int:
                return read(n)

            aread.__qualname__ = read.__qualname__
            self.fn = self.cache.cached(**tags)(aread)

    def run(self, value: Any) -> Any:
        if self.mode == "sync":
            self.cache.wait_background()
            return value

        async def settle() -> Any:
            result = await value
            others = asyncio.all_tasks() - {asyncio.current_task()}
            await asyncio.gather(*others)  # background refreshes
            return result

        return asyncio.run(settle())

    def call(self, name: str, *args: Any) -> Any:
        target = self.fn if name == "call" else getattr(self.fn, name, None)
        if target is None:
            method = name if self.mode == "sync" else f"a{name}"
            target = getattr(self.cache, method)
        return self.run(target(*args))

    def scenario(self) -> list[Any]:
        answers = [
            self.call("call", 1),  # miss: load under the lock, store, tag
            self.call("call", 1),  # hit: one GET, or the memory tier
            self.call("get_many", [1, 2, 3]),
            self.call("refresh", 2),
            self.call("invalidate", 1),
            self.call("call", 1),
        ]
        self.clock.advance(70)  # stale: served while one refresh runs behind it
        answers += [self.call("call", 3), self.call("call", 3)]
        answers.append(self.call("invalidate_tags", "group:1"))
        answers += [self.call("call", 1), self.call("invalidate_namespace")]
        answers.append(self.call("call", 2))
        self.backend.down = True  # fails open; the guard opens after three failures
        answers += [self.call("call", n) for n in range(4, 8)]
        return answers


@pytest.mark.parametrize("local", [False, True], ids=["shared", "two-tier"])
def test_the_same_calls_send_the_same_commands_from_def_and_async_def(local: bool) -> None:
    sync, async_ = Side("sync", local=local), Side("async", local=local)
    assert sync.scenario() == async_.scenario()
    assert sync.backend.commands == async_.backend.commands
    assert sync.loads == async_.loads
    assert sync.fn.cache_info() == async_.fn.cache_info()
    assert [type(e) for e in sync.recorder.events] == [type(e) for e in async_.recorder.events]
    assert sync.cache.backend_errors == async_.cache.backend_errors == 3


def test_a_shared_hit_is_one_get_from_def_and_async_def() -> None:
    for mode in ("sync", "async"):
        side = Side(mode, local=False)
        side.call("call", 1)
        side.backend.commands.clear()
        assert side.call("call", 1) == 10
        assert side.backend.commands == [
            ("get", "p:tests.unit.cache.test_parity.Side.__init__.<locals>.read:[1]")
        ], mode


def test_a_shared_only_async_cache_keeps_no_memory_tier_tag_index() -> None:
    """It did: every tagged load of an async function left its key in an index nothing
    pruned (there is no memory tier to prune against)."""
    for mode in ("sync", "async"):
        side = Side(mode, local=False)
        for n in range(50):
            side.call("call", n)
        assert side.cache._namespace.index.tags == {}, mode


# -- invalidations reach the memory tiers the same way ----------------------------------------


def published(server: fakeredis.FakeServer, channel: str, action: Callable[[], Any]) -> list[str]:
    listener = fakeredis.FakeRedis(server=server).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(channel)
    listener.get_message(timeout=0.05)  # the subscription's confirmation
    action()
    messages = []
    while (message := listener.get_message(timeout=0.05)) is not None:
        messages.append(message["data"].decode())
    listener.close()
    return messages


def two_tier(mode: str, server: fakeredis.FakeServer) -> Cache:
    backend: Any = (
        RedisBackend(fakeredis.FakeRedis(server=server))
        if mode == "sync"
        else AsyncRedisBackend(fakeredis.FakeAsyncRedis(server=server))
    )
    cache = Cache(backend, namespace=f"tt-{mode}", local=MemoryBackend(), local_ttl=60)
    # Publishing goes through a sync client; an asyncio-only cache gets one this way.
    cache.listen_for_invalidations(fakeredis.FakeRedis(server=server))
    return cache


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_invalidating_the_namespace_publishes_and_forgets_the_reverse_index(mode: str) -> None:
    """`ainvalidate_namespace` skipped both: other processes kept serving their copies."""
    server = fakeredis.FakeServer()
    cache = two_tier(mode, server)

    def read(n: int) -> int:
        return n

    async def aread(n: int) -> int:
        return n

    fn = cache.cached(read if mode == "sync" else aread)

    def scenario() -> Any:
        if mode == "sync":
            fn(1)
            return cache.invalidate_namespace()

        async def both() -> int:
            await fn(1)
            return await cache.ainvalidate_namespace()

        return asyncio.run(both())

    assert published(server, cache.channel, scenario) == ["n"]
    assert cache._namespace.index.reverse == {}  # internal: the drift was here
    assert cache.local is not None
    assert len(cache.local) == 0
    cache.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_invalidating_tags_publishes_the_keys_dropped(mode: str) -> None:
    """`ainvalidate_tags` did not publish: other processes' memory tiers kept the entries."""
    server = fakeredis.FakeServer()
    cache = two_tier(mode, server)

    def read(n: int) -> int:
        return n

    async def aread(n: int) -> int:
        return n

    fn = cache.cached(name="read", tags=lambda n: ["all"])(read if mode == "sync" else aread)

    def scenario() -> Any:
        if mode == "sync":
            fn(1)
            return cache.invalidate_tags("all")

        async def both() -> int:
            await fn(1)
            return await cache.ainvalidate_tags("all")

        return asyncio.run(both())

    assert published(server, cache.channel, scenario) == [f"ktt-{mode}:read:[1]"]
    cache.close()
