"""Logical databases 1..3 of the shared Redis as cache shards; a throw-away server killed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from scalepatterns.sharding import AsyncShardedRedis, HashRing, ShardedRedis, ShardUnavailable
from tests.support.servers import RedisServer
from tests.unit.sharding.redis_scenarios import scenario

pytestmark = pytest.mark.redis

SHARDS = ["cache-1", "cache-2", "cache-3"]


def db_url(redis_url: str, db: int) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{db}"


@pytest.fixture
def cleanup(redis_url: str, unique_name: str) -> Iterator[str]:
    yield unique_name
    for db in (1, 2, 3):
        client = redis.Redis.from_url(db_url(redis_url, db))
        keys = list(client.scan_iter(match=f"{unique_name}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_sync_over_three_logical_databases(redis_url: str, cleanup: str) -> None:
    clients = {s: redis.Redis.from_url(db_url(redis_url, i + 1)) for i, s in enumerate(SHARDS)}
    sharded = ShardedRedis(HashRing(SHARDS), clients)
    asyncio.run(scenario(sharded, clients, cleanup))
    sharded.close()


def test_async_over_three_logical_databases(redis_url: str, cleanup: str) -> None:
    async def main() -> None:
        clients = {s: aioredis.from_url(db_url(redis_url, i + 1)) for i, s in enumerate(SHARDS)}
        sharded = AsyncShardedRedis(HashRing(SHARDS), clients)
        await scenario(sharded, clients, cleanup)
        await sharded.aclose()

    asyncio.run(main())


def test_a_killed_shard_fails_alone(
    redis_url: str, cleanup: str, throwaway_redis: RedisServer
) -> None:
    clients: dict[str, Any] = {
        "cache-1": redis.Redis.from_url(db_url(redis_url, 1)),
        "cache-2": redis.Redis.from_url(db_url(redis_url, 2)),
        "cache-3": redis.Redis.from_url(
            throwaway_redis.url, socket_timeout=1, retry=Retry(NoBackoff(), 0)
        ),
    }
    sharded = ShardedRedis(HashRing(SHARDS), clients)
    keys = [f"{cleanup}:k{i}" for i in range(30)]
    sharded.mset(dict.fromkeys(keys, "v"))
    ring = HashRing(SHARDS)
    on_dead = [k for k in keys if ring.node_for(k) == "cache-3"]
    alive = [k for k in keys if ring.node_for(k) != "cache-3"]
    assert on_dead
    assert alive
    throwaway_redis.kill()
    with pytest.raises(ShardUnavailable) as info:
        sharded.get(on_dead[0])
    assert info.value.shard == "cache-3"
    assert sharded.mget(alive) == [b"v"] * len(alive)  # the other shards keep serving
    with pytest.raises(ShardUnavailable):
        sharded.delete(*keys)
    assert sharded.exists(*alive) == 0  # the reachable shards still deleted their keys
    sharded.close()
