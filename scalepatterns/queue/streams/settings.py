"""The options both Redis Streams brokers take, checked once, and the client they talk to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scalepatterns._checks import seconds
from scalepatterns._deps import require
from scalepatterns._redis_url import client_from_url, redact
from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.queue.streams.keys import DEFAULT_PREFIX, check_prefix

__all__ = [
    "StreamsSettings",
    "describe",
    "is_cluster",
    "make_client",
]

# Longest blocking XREAD of an idle consumer: how long closing a subscription may take.
_BLOCK = 0.5
_MAX_SIZE = 512 * 1024 * 1024  # Redis's largest string


@dataclass(frozen=True)
class StreamsSettings:
    """What `RedisStreamsBroker` and `AsyncRedisStreamsBroker` take (see their docstrings)."""

    prefix: str = DEFAULT_PREFIX
    visibility_timeout: float = 30.0
    max_message_size: int = 1024 * 1024
    min_replicas: int = 0
    replica_timeout: float = 1.0
    timeout: float = 5.0
    listeners: Listeners = field(default_factory=lambda: default_listeners)

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        seconds("visibility_timeout", self.visibility_timeout, positive=True)
        seconds("replica_timeout", self.replica_timeout, positive=True)
        seconds("timeout", self.timeout, positive=True)
        size = self.max_message_size
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= _MAX_SIZE:
            raise ConfigurationError("max_message_size", size, f"bytes, an int in 1..{_MAX_SIZE}")
        replicas = self.min_replicas
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ConfigurationError("min_replicas", replicas, "an int >= 0")

    @property
    def block(self) -> float:
        """Seconds an idle consumer blocks in XREAD: below the socket timeout."""
        return min(_BLOCK, self.timeout / 2)

    @property
    def reclaim_every(self) -> float:
        """How often a consumer looks for messages held past the visibility timeout."""
        return min(self.visibility_timeout / 2, 5.0)


def make_client(
    client_or_url: Any, settings: StreamsSettings, *, asyncio: bool
) -> tuple[Any, bool]:
    """(client, owned): the client given, or one made from a URL (closed with the broker),
    with `settings.timeout` as its socket timeouts so an unreachable server fails a call
    instead of hanging it."""
    feature = "AsyncRedisStreamsBroker" if asyncio else "RedisStreamsBroker"
    if not isinstance(client_or_url, str):
        module = require("redis.asyncio" if asyncio else "redis", extra="redis", feature=feature)
        cluster = module.cluster.RedisCluster if hasattr(module, "cluster") else None
        if not isinstance(client_or_url, module.Redis) and (
            cluster is None or not isinstance(client_or_url, cluster)
        ):
            kind = "redis.asyncio" if asyncio else "redis"
            raise ConfigurationError(
                "client_or_url",
                client_or_url,
                f"a {kind}.Redis or {kind}.cluster.RedisCluster client, or a redis:// URL",
            )
        if client_or_url.get_encoder().decode_responses:
            raise ConfigurationError(
                "client_or_url",
                client_or_url,
                "a client with decode_responses=False (message bodies are bytes)",
            )
        return client_or_url, False
    client = client_from_url(
        client_or_url,
        parameter="client_or_url",
        asyncio=asyncio,
        feature=feature,
        socket_timeout=settings.timeout,
        socket_connect_timeout=settings.timeout,
    )
    return client, True


def is_cluster(client: Any) -> bool:
    return hasattr(client, "get_nodes") and hasattr(client, "nodes_manager")


def describe(client: Any) -> str:
    """Where `client` connects, without a password."""
    if is_cluster(client):
        nodes = client.get_nodes()
        return "cluster " + ",".join(f"{n.host}:{n.port}" for n in nodes[:3])
    pool = getattr(client, "connection_pool", None)
    service = getattr(pool, "service_name", None)
    if service is not None:
        return f"redis+sentinel://.../{service}"
    kwargs = getattr(pool, "connection_kwargs", {})
    if "path" in kwargs:
        return redact(f"unix://{kwargs['path']}")
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
