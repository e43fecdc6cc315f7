"""The broker contracts on Redis Streams: the shared Redis (sync and async) and a
throw-away Redis Cluster."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from scalepatterns.queue import AsyncRedisStreamsBroker, RedisStreamsBroker
from scalepatterns.queue.broker import AsyncBroker
from scalepatterns.queue.testing import AsyncBrokerContract, BrokerContract

pytestmark = pytest.mark.redis


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    prefix = f"sp_test_{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


class TestRedisStreamsBroker(BrokerContract):
    @pytest.fixture
    def broker(self, redis_url: str, prefix: str) -> Iterator[RedisStreamsBroker]:
        broker = RedisStreamsBroker(redis_url, prefix=prefix)
        yield broker
        broker.close()


class TestAsyncRedisStreamsBroker(AsyncBrokerContract):
    @pytest.fixture
    def make_broker(self, redis_url: str, prefix: str) -> Callable[[], AsyncBroker]:
        return lambda: AsyncRedisStreamsBroker(redis_url, prefix=prefix)


class TestRedisStreamsBrokerOnCluster(BrokerContract):
    """Each queue's keys share a slot; fan-out and bindings span the three nodes."""

    @pytest.fixture
    def broker(self, cluster_ports: list[int]) -> Iterator[RedisStreamsBroker]:
        from redis.cluster import RedisCluster

        client = RedisCluster(host="127.0.0.1", port=cluster_ports[0])
        broker = RedisStreamsBroker(client)
        yield broker
        broker.close()
        client.close()


class _ClosingClient(AsyncRedisStreamsBroker):
    """Closes the cluster client it was given, on the loop that used it."""

    async def close(self) -> None:
        await super().close()
        await self.client.aclose()


class TestAsyncRedisStreamsBrokerOnCluster(AsyncBrokerContract):
    @pytest.fixture
    def make_broker(self, cluster_ports: list[int]) -> Callable[[], AsyncBroker]:
        from redis.asyncio.cluster import RedisCluster

        def make() -> AsyncBroker:
            client = RedisCluster(host="127.0.0.1", port=cluster_ports[0])
            return _ClosingClient(client)

        return make
