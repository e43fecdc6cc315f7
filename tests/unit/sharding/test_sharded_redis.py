"""ShardedRedis / AsyncShardedRedis on fakeredis: the same scenario, sync and async."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from scalepatterns import BackendUnavailable
from scalepatterns.sharding import AsyncShardedRedis, HashRing, ShardedRedis, ShardUnavailable
from tests.unit.sharding.redis_scenarios import scenario

SHARDS = ["cache-1", "cache-2", "cache-3"]


def test_sync_scenario() -> None:
    clients = {s: fakeredis.FakeRedis() for s in SHARDS}
    sharded = ShardedRedis(HashRing(SHARDS), clients)
    asyncio.run(scenario(sharded, clients, "t"))
    assert sharded.client_for("x") in clients.values()
    sharded.close()


def test_async_scenario() -> None:
    async def main() -> None:
        clients = {s: fakeredis.aioredis.FakeRedis() for s in SHARDS}
        sharded = AsyncShardedRedis(HashRing(SHARDS), clients)
        await scenario(sharded, clients, "t")
        await sharded.aclose()

    asyncio.run(main())


def test_a_dead_shard_names_itself_and_spares_the_others() -> None:
    clients: dict[str, Any] = {s: fakeredis.FakeRedis() for s in SHARDS}
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    clients["cache-2"] = dead
    sharded = ShardedRedis(HashRing(SHARDS), clients)
    ring = HashRing(SHARDS)
    alive_key = next(f"k{i}" for i in range(100) if ring.node_for(f"k{i}") != "cache-2")
    dead_key = next(f"k{i}" for i in range(100) if ring.node_for(f"k{i}") == "cache-2")
    assert sharded.set(alive_key, "v") is True
    with pytest.raises(ShardUnavailable) as info:
        sharded.get(dead_key)
    assert info.value.shard == "cache-2"
    assert isinstance(info.value, BackendUnavailable)
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    with pytest.raises(ShardUnavailable):
        sharded.mget([alive_key, dead_key])
    assert sharded.get(alive_key) == b"v"
    dead.close()
