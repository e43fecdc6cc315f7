"""One rule in every block: where a Redis client is taken, a URL is taken too, and a bad
URL is a `ConfigurationError` naming the parameter, at construction."""

from __future__ import annotations

import asyncio

import pytest

from scalepatterns import Cache, RateLimiter
from scalepatterns._redis_url import server_of
from scalepatterns.backpressure import RedisListDepth, RedisStreamDepth
from scalepatterns.errors import BackendUnavailable, ConfigurationError
from scalepatterns.queue import RedisDedupStore
from scalepatterns.resilience import RedisBreakerState
from scalepatterns.sharding import AsyncShardedRedis, HashRing, ShardedRedis

MAKERS = {
    "Cache.redis": Cache.redis,
    "RateLimiter": lambda url: RateLimiter("1/second", redis=url),
    "RedisDedupStore": RedisDedupStore,
    "RedisBreakerState": RedisBreakerState,
    "RedisListDepth": lambda url: RedisListDepth(url, "jobs"),
    "RedisStreamDepth": lambda url: RedisStreamDepth(url, "jobs"),
    "ShardedRedis": lambda url: ShardedRedis(HashRing(["a"]), {"a": url}),
    "AsyncShardedRedis": lambda url: AsyncShardedRedis(HashRing(["a"]), {"a": url}),
}
PARAMETER = {
    "Cache.redis": "client_or_url",
    "RateLimiter": "redis",
    "ShardedRedis": "clients['a']",
    "AsyncShardedRedis": "clients['a']",
}


@pytest.mark.parametrize("maker", sorted(MAKERS))
@pytest.mark.parametrize("url", ["notaurl", "http://127.0.0.1:6379", "redis+sentinel://h/"])
def test_a_bad_url_is_refused_naming_the_parameter(maker: str, url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        MAKERS[maker](url)
    assert caught.value.parameter == PARAMETER.get(maker, "client")


@pytest.mark.parametrize("maker", sorted(MAKERS))
def test_a_url_constructs_without_touching_the_server(maker: str) -> None:
    MAKERS[maker]("redis://:secret@127.0.0.1:1/0")  # nothing listens on port 1


def test_sharded_clients_from_urls_are_of_the_right_kind() -> None:
    sync = ShardedRedis(HashRing(["a"]), {"a": "redis://127.0.0.1:1/3"})
    assert server_of(sync.client_for("k")) == "127.0.0.1:1"
    assert not asyncio.iscoroutinefunction(type(sync.client_for("k")).execute_command)
    together = AsyncShardedRedis(HashRing(["a"]), {"a": "redis://127.0.0.1:1/3"})
    assert asyncio.iscoroutinefunction(type(together.client_for("k")).execute_command)


def test_a_depth_from_a_dead_url_is_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="LLEN 'jobs'"):
        RedisListDepth("redis://127.0.0.1:1/0", "jobs")()
