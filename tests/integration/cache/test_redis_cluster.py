"""The cache on a RedisCluster client (the `cluster_client` fixture: a throw-away 3-node
cluster on free ports)."""

from __future__ import annotations

import pytest

from scalepatterns._direct_redis import DirectConnections
from scalepatterns.cache import Cache
from scalepatterns.cache.redis_backend import RedisBackend
from scalepatterns.cache.testing import BackendContract

pytestmark = [pytest.mark.redis, pytest.mark.slow]


class TestRedisClusterBackend(BackendContract):
    locking = tagging = True

    @pytest.fixture
    def backend(self, cluster_client: object) -> RedisBackend:
        # Every command goes through the cluster client: it knows which node owns a slot.
        assert DirectConnections.for_client(cluster_client) is None
        return RedisBackend(cluster_client)


def test_two_tier_cache_on_a_cluster_batches_tags_and_bumps(cluster_client: object) -> None:
    cache = Cache.two_tier(cluster_client, namespace="cl", local_ttl=5)
    loads: list[int] = []

    @cache.cached(tags=lambda x: [f"parity:{x % 2}"])
    def f(x: int) -> int:
        loads.append(x)
        return x * x

    try:
        assert [f(i) for i in range(10)] == [i * i for i in range(10)]
        assert f.get_many(list(range(12))) == [i * i for i in range(12)]  # keys on 3 nodes
        assert len(loads) == 12
        assert cache.invalidate_tags("parity:1") == 6
        cache.invalidate_namespace()
        f(1)
        assert len(loads) == 13
        assert cache.backend_errors == 0
    finally:
        cache.close()
