"""One Redis-sharding scenario, run against sync and async clients, fake and real."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scalepatterns.sharding import AsyncShardedRedis, ShardedRedis
from tests.unit.sharding.scenarios import call


async def count_keys(client: Any, prefix: str) -> int:
    found = client.scan_iter(match=f"{prefix}:*")
    if hasattr(found, "__aiter__"):
        return len([k async for k in found])
    return len(list(found))


async def scenario(
    sharded: ShardedRedis | AsyncShardedRedis, clients: Mapping[str, Any], prefix: str
) -> None:
    keys = [f"{prefix}:user:{i}" for i in range(60)]
    placement = sharded.router.placement
    assert await call(sharded.mset({k: str(i) for i, k in enumerate(keys)})) is True
    per_shard = {shard: await count_keys(clients[shard], prefix) for shard in clients}
    assert per_shard == {s: sum(1 for k in keys if placement.node_for(k) == s) for s in clients}
    assert all(per_shard.values()), per_shard  # every shard got some keys
    assert await call(sharded.get(keys[7])) == b"7"
    assert await call(sharded.mget([keys[3], f"{prefix}:missing", keys[50]])) == [
        b"3",
        None,
        b"50",
    ]
    assert await call(sharded.set(f"{prefix}:counter", 1, ex=60)) is True
    assert await call(sharded.incr(f"{prefix}:counter", 4)) == 5
    assert 0 < await call(sharded.ttl(f"{prefix}:counter")) <= 60
    assert await call(sharded.expire(f"{prefix}:counter", 120)) is True
    assert await call(sharded.exists(*keys[:10], f"{prefix}:missing")) == 10
    pings = await call(sharded.fan_out(lambda c: c.ping()))
    assert set(pings) == set(clients)
    assert all(pings.values())
    deleted = await call(sharded.delete(*keys, f"{prefix}:counter", f"{prefix}:missing"))
    assert deleted == 61
    assert [await count_keys(c, prefix) for c in clients.values()] == [0] * len(clients)
    assert sum(sharded.router.counts().values()) > 0
