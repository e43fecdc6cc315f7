"""The Redis rate limiter on a RedisCluster client: the client's own ``evalsha`` (no direct
connections), one {hash-tagged} key per limit, keys spread over the cluster's nodes."""

from __future__ import annotations

import pytest

from scalepatterns import RateLimiter

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.mark.parametrize("algorithm", ["gcra", "sliding-window", "fixed-window"])
def test_limits_hold_per_key_on_a_cluster(cluster_client, unique_name, algorithm):
    limiter = RateLimiter("3/minute", algorithm=algorithm, redis=cluster_client, prefix=unique_name)
    assert limiter.store.direct is None
    users = [f"user:{i}" for i in range(12)]
    for user in users:
        assert [limiter.acquire(user).allowed for _ in range(4)] == [True, True, True, False]
    slots = {cluster_client.keyslot(limiter.store.redis_key(user)) for user in users}
    nodes = {cluster_client.nodes_manager.get_node_from_slot(slot).name for slot in slots}
    assert len(nodes) > 1  # the keys really are spread over the cluster
    assert limiter.store.backend_errors == 0
    for user in users:
        cluster_client.delete(limiter.store.redis_key(user))
