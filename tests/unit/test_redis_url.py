"""``redis+sentinel://`` URLs: what they make, and what they refuse (without a server)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
import redis
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from scalepatterns import ConfigurationError, RateLimiter
from scalepatterns._redis_url import client_from_url, redact
from scalepatterns.backpressure.events import LimiterBackendFailed
from scalepatterns.cache import Cache
from scalepatterns.events import EventRecorder, Listeners
from scalepatterns.queue.dedup import RedisDedupStore
from tests.support.servers import free_port


def make(url: str, **options: Any) -> Any:
    return client_from_url(url, parameter="url", feature="a test", **options)


def test_a_sentinel_url_makes_a_client_of_the_master_it_names() -> None:
    client = make(
        "redis+sentinel://app:s3cret@10.0.0.1:26380,10.0.0.2,[::1]:5000/orders/3"
        "?socket_timeout=0.25&sentinel_password=watch",
        socket_connect_timeout=0.1,
    )
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "orders"
    assert pool.is_master
    manager = pool.sentinel_manager
    hosts = [s.connection_pool.connection_kwargs for s in manager.sentinels]
    assert [(h["host"], h["port"]) for h in hosts] == [
        ("10.0.0.1", 26380),
        ("10.0.0.2", 26379),
        ("::1", 5000),
    ]
    settings = pool.connection_kwargs
    assert (settings["username"], settings["password"], settings["db"]) == ("app", "s3cret", 3)
    assert settings["socket_timeout"] == 0.25  # the URL's option wins
    assert settings["socket_connect_timeout"] == 0.1
    # The sentinels get the socket settings and their own password, not the master's.
    assert manager.sentinel_kwargs == {
        "socket_timeout": 0.25,
        "socket_connect_timeout": 0.1,
        "password": "watch",
    }
    client.close()


def test_the_asyncio_form_and_plain_urls() -> None:
    async def build() -> Any:
        return make("redis+sentinel://h/orders", asyncio=True)

    client = asyncio.run(build())
    assert isinstance(client.connection_pool, AsyncSentinelPool)
    assert client.connection_pool.connection_kwargs["db"] == 0
    plain = make("redis://127.0.0.1:1/2")
    assert isinstance(plain, redis.Redis)
    assert plain.connection_pool.connection_kwargs["db"] == 2
    plain.close()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel://h", "no service name"),
        ("redis+sentinel:///orders", "not a sentinel host"),
        ("redis+sentinel://h:0/orders", "not a sentinel host"),
        ("redis+sentinel://h:26379,,k/orders", "not a sentinel host"),
        ("redis+sentinel://[::1/orders", "IPv6"),
        ("redis+sentinel://h/orders/x", "db number"),
        ("redis+sentinel://h/orders/1/2", "db number"),
        ("redis+sentinel://h/orders?socket_timeout=soon", "socket_timeout"),
        ("rediss+sentinel://h/orders", "for TLS, pass a client"),
        ("http://h/0", "redis+sentinel://"),
    ],
)
def test_a_url_that_cannot_be_read_is_refused_naming_the_parameter(url: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(why)) as caught:
        make(url)
    assert caught.value.parameter == "url"


def test_refusals_never_show_a_password() -> None:
    url = "redis+sentinel://app:s3cret@h/orders/x?sentinel_password=watch"
    with pytest.raises(ConfigurationError) as caught:
        make(url)
    assert "s3cret" not in str(caught.value)
    assert "watch" not in str(caught.value)
    assert redact(url) == "redis+sentinel://app:***@h/orders/x?sentinel_password=***"
    assert redact("redis://h/0") == "redis://h/0"


def test_every_block_that_takes_a_url_reads_it_here() -> None:
    with pytest.raises(ConfigurationError) as cache_error:
        Cache.redis("redis+sentinel://h")
    assert cache_error.value.parameter == "client_or_url"
    with pytest.raises(ConfigurationError) as dedup_error:
        RedisDedupStore("redis+sentinel://h")
    assert dedup_error.value.parameter == "client"
    store = RedisDedupStore("redis+sentinel://127.0.0.1:1/orders")
    assert isinstance(store._client.connection_pool, SentinelConnectionPool)


def test_the_limiters_own_connections_ask_the_sentinels_where_the_master_is() -> None:
    """A fresh connection of a Sentinel-managed pool knows no master until it asks: one
    that connected on its own would reach the default address (localhost:6379)."""
    fast = {"socket_timeout": 0.2, "retry": Retry(NoBackoff(), 0)}
    sentinel = Sentinel([("127.0.0.1", free_port())], sentinel_kwargs=fast, **fast)
    client = sentinel.master_for("nowhere")
    recorder = EventRecorder()
    listeners = Listeners()
    listeners.add(recorder)
    limiter = RateLimiter("1/hour", redis=client, listeners=listeners)
    assert getattr(limiter.store, "direct", None) is not None
    assert all(limiter.acquire("k").allowed for _ in range(3))  # fail-open: no Redis decided
    failures = recorder.of_type(LimiterBackendFailed)
    assert [f.error for f in failures] == ["MasterNotFoundError"] * 3
    limiter.close()
    client.close()
