from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from scalepatterns.cache import MemoryBackend, ShardedBackend
from scalepatterns.cache.redis_backend import AsyncRedisBackend, RedisBackend
from scalepatterns.cache.testing import AsyncBackendContract, BackendContract
from scalepatterns.clock import FakeClock
from scalepatterns.errors import ConfigurationError
from scalepatterns.sharding import HashRing, ShardUnavailable


class TestMemoryBackend(BackendContract):
    locking = tagging = True

    @pytest.fixture
    def backend(self) -> MemoryBackend:
        return MemoryBackend(100)


class TestFakeRedisBackend(BackendContract):
    locking = tagging = True

    @pytest.fixture
    def backend(self) -> RedisBackend:
        return RedisBackend(fakeredis.FakeRedis())


class TestAsyncFakeRedisBackend(AsyncBackendContract):
    locking = tagging = True

    @pytest.fixture
    def async_backend(self) -> AsyncRedisBackend:
        return AsyncRedisBackend(fakeredis.FakeAsyncRedis())


class TestShardedBackend(BackendContract):
    locking = tagging = True

    @pytest.fixture
    def backend(self) -> ShardedBackend:
        nodes = ["a", "b", "c"]
        return ShardedBackend(
            HashRing(nodes), {n: RedisBackend(fakeredis.FakeRedis()) for n in nodes}
        )


def test_memory_expiry_and_size_bound() -> None:
    clock = FakeClock()
    store = MemoryBackend(3, clock=clock)
    store.set("short", b"1", 5)
    clock.advance(5)
    assert store.get("short") is None
    for i in range(5):
        store.set(f"k{i}", b"x", 60)
    assert len(store) == 3
    assert store.get("k0") is None
    assert store.get("k4") == b"x"


def test_memory_lock_expires() -> None:
    clock = FakeClock()
    store = MemoryBackend(clock=clock)
    assert store.acquire_lock("l", "a", 1)
    clock.advance(1)
    assert store.acquire_lock("l", "b", 1)
    assert not store.release_lock("l", "a")


def test_sharded_get_many_is_one_batch_per_shard() -> None:
    calls: list[int] = []

    class Counting(MemoryBackend):
        def get_many(self, keys: Any) -> list[bytes | None]:
            calls.append(len(keys))
            return super().get_many(keys)

    nodes = ["a", "b"]
    shards = {n: Counting() for n in nodes}
    sharded = ShardedBackend(HashRing(nodes), shards)
    keys = [f"k{i}" for i in range(40)]
    for key in keys:
        sharded.set(key, key.encode(), 60)
    assert sharded.get_many(keys) == [k.encode() for k in keys]
    assert sorted(calls) == sorted(len(s) for s in shards.values())
    assert len(calls) == 2
    assert all(len(s) > 0 for s in shards.values())


def test_sharded_rejects_bad_placements() -> None:
    with pytest.raises(TypeError):
        ShardedBackend(object(), {"a": MemoryBackend()})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ShardedBackend(HashRing(["a"]), {})


def test_one_dead_shard_leaves_the_others_caching() -> None:
    from scalepatterns.cache import Cache

    nodes = ["a", "b", "c"]
    servers = {n: fakeredis.FakeServer() for n in nodes}
    placement = HashRing(nodes)
    sharded = ShardedBackend(
        placement, {n: RedisBackend(fakeredis.FakeRedis(server=servers[n])) for n in nodes}
    )
    cache = Cache(sharded, namespace="sh", jitter=0)
    loads: list[int] = []

    @cache.cached(name="f")
    def f(x: int) -> int:
        loads.append(x)
        return x * 2

    servers["b"].connected = False
    keys = range(60)
    for _ in range(3):
        assert [f(x) for x in keys] == [x * 2 for x in keys]
    on_b = {x for x in keys if placement.node_for(f"sh:f:[{x}]") == "b"}
    assert on_b
    assert set(keys) - on_b
    # Keys on live shards loaded once; keys on the dead shard every time; no outage overall.
    assert sorted(loads) == sorted([*keys, *on_b, *on_b])
    assert sharded.guards["b"].is_open
    assert not cache.guard.is_open
    assert cache.backend_errors <= 3  # only until shard b's guard opened


def test_a_dead_shard_raises_the_sharding_blocks_shard_unavailable() -> None:
    server = fakeredis.FakeServer()
    sharded = ShardedBackend(
        HashRing(["only"]), {"only": RedisBackend(fakeredis.FakeRedis(server=server))}
    )
    server.connected = False
    with pytest.raises(ShardUnavailable) as info:
        sharded.get("k")
    assert info.value.shard == "only"
    assert info.value.backend == "redis"
