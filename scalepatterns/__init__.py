"""scalepatterns: scalability building blocks for Python services.

The public API. Foundation names are imported here directly; the blocks' names load on
first access, so `import scalepatterns` imports no server client (redis, pika,
sqlalchemy) until a backend that needs one is touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scalepatterns._deps import lazy_attributes
from scalepatterns.clock import SYSTEM_CLOCK, Clock, FakeClock, SystemClock
from scalepatterns.errors import (
    BackendUnavailable,
    CircuitOpen,
    ConfigurationError,
    DeadlineExceeded,
    MissingDependency,
    QueueFull,
    RateLimited,
    ScalePatternsError,
    SerializationError,
    SignatureError,
)
from scalepatterns.events import Event, EventRecorder, Listener, Listeners, default_listeners
from scalepatterns.outage import OutageGuard
from scalepatterns.serializers import (
    JsonSerializer,
    MsgpackSerializer,
    Serializer,
    SignedPickleSerializer,
)

if TYPE_CHECKING:  # the lazily loaded names, for type checkers and IDEs
    from scalepatterns.backpressure import (
        AdaptiveLimiter,
        BulkheadFull,
        ConcurrencyLimiter,
        QueueBackpressure,
        RateLimiter,
        advise_workers,
    )
    from scalepatterns.cache import (
        AsyncCacheBackend,
        AsyncCachedFunction,
        Cache,
        CacheBackend,
        CacheBackendError,
        CachedFunction,
        CacheHit,
        CacheInfo,
        CacheLoad,
        CacheLoadError,
        CacheMiss,
        CacheStale,
        MemoryBackend,
        ShardedBackend,
    )
    from scalepatterns.queue import (
        BrokerBlocked,
        DeadLetters,
        EventBus,
        MemoryBroker,
        MemoryDedupStore,
        Producer,
        PublishError,
        QueueSpec,
        RabbitMQBroker,
        RedisDedupStore,
        TopologyConflict,
        Worker,
        task,
        task_worker,
    )
    from scalepatterns.resilience import (
        CircuitBreaker,
        LoadBalancer,
        NoHealthyEndpoint,
        RedisBreakerState,
        RetryBudget,
        deadline,
        fallback,
        pipeline,
        remaining,
        resilient,
        retry,
        timeout,
    )
    from scalepatterns.routing import (
        ConsistencyToken,
        InvalidToken,
        NoHealthyReplica,
        ReadOnlyViolation,
        ReadWriteRouter,
        ReplicaMonitor,
        RoutingSession,
    )
    from scalepatterns.sharding.bounded import BoundedLoadRing
    from scalepatterns.sharding.errors import FanOutError, ShardingError, ShardUnavailable
    from scalepatterns.sharding.jump import JumpHash
    from scalepatterns.sharding.placement import Placement
    from scalepatterns.sharding.ranges import RangeShards
    from scalepatterns.sharding.rebalance import RebalancePlan, plan_rebalance
    from scalepatterns.sharding.rendezvous import Rendezvous
    from scalepatterns.sharding.reshard import Resharder
    from scalepatterns.sharding.ring import HashRing
    from scalepatterns.sharding.router import ShardRouter, SkewReport
    from scalepatterns.sharding.sharded_redis import AsyncShardedRedis, ShardedRedis
    from scalepatterns.sharding.sql import AsyncShardedSession, ShardedSession

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first attribute access.
_LAZY: dict[str, str] = {
    "AdaptiveLimiter": "scalepatterns.backpressure",
    "AsyncCacheBackend": "scalepatterns.cache",
    "AsyncCachedFunction": "scalepatterns.cache",
    "AsyncShardedRedis": "scalepatterns.sharding.sharded_redis",
    "AsyncShardedSession": "scalepatterns.sharding.sql",
    "BoundedLoadRing": "scalepatterns.sharding.bounded",
    "BrokerBlocked": "scalepatterns.queue",
    "BulkheadFull": "scalepatterns.backpressure",
    "Cache": "scalepatterns.cache",
    "CacheBackend": "scalepatterns.cache",
    "CacheBackendError": "scalepatterns.cache",
    "CacheHit": "scalepatterns.cache",
    "CacheInfo": "scalepatterns.cache",
    "CacheLoad": "scalepatterns.cache",
    "CacheLoadError": "scalepatterns.cache",
    "CacheMiss": "scalepatterns.cache",
    "CacheStale": "scalepatterns.cache",
    "CachedFunction": "scalepatterns.cache",
    "CircuitBreaker": "scalepatterns.resilience",
    "ConcurrencyLimiter": "scalepatterns.backpressure",
    "ConsistencyToken": "scalepatterns.routing",
    "DeadLetters": "scalepatterns.queue",
    "EventBus": "scalepatterns.queue",
    "FanOutError": "scalepatterns.sharding.errors",
    "HashRing": "scalepatterns.sharding.ring",
    "InvalidToken": "scalepatterns.routing",
    "JumpHash": "scalepatterns.sharding.jump",
    "LoadBalancer": "scalepatterns.resilience",
    "MemoryBackend": "scalepatterns.cache",
    "MemoryBroker": "scalepatterns.queue",
    "MemoryDedupStore": "scalepatterns.queue",
    "NoHealthyEndpoint": "scalepatterns.resilience",
    "NoHealthyReplica": "scalepatterns.routing",
    "Placement": "scalepatterns.sharding.placement",
    "Producer": "scalepatterns.queue",
    "PublishError": "scalepatterns.queue",
    "QueueBackpressure": "scalepatterns.backpressure",
    "QueueSpec": "scalepatterns.queue",
    "RabbitMQBroker": "scalepatterns.queue",
    "RangeShards": "scalepatterns.sharding.ranges",
    "RateLimiter": "scalepatterns.backpressure",
    "ReadOnlyViolation": "scalepatterns.routing",
    "ReadWriteRouter": "scalepatterns.routing",
    "RebalancePlan": "scalepatterns.sharding.rebalance",
    "RedisBreakerState": "scalepatterns.resilience",
    "RedisDedupStore": "scalepatterns.queue",
    "Rendezvous": "scalepatterns.sharding.rendezvous",
    "ReplicaMonitor": "scalepatterns.routing",
    "Resharder": "scalepatterns.sharding.reshard",
    "RetryBudget": "scalepatterns.resilience",
    "RoutingSession": "scalepatterns.routing",
    "ShardRouter": "scalepatterns.sharding.router",
    "ShardUnavailable": "scalepatterns.sharding.errors",
    "ShardedBackend": "scalepatterns.cache",
    "ShardedRedis": "scalepatterns.sharding.sharded_redis",
    "ShardedSession": "scalepatterns.sharding.sql",
    "ShardingError": "scalepatterns.sharding.errors",
    "SkewReport": "scalepatterns.sharding.router",
    "TopologyConflict": "scalepatterns.queue",
    "Worker": "scalepatterns.queue",
    "advise_workers": "scalepatterns.backpressure",
    "deadline": "scalepatterns.resilience",
    "fallback": "scalepatterns.resilience",
    "pipeline": "scalepatterns.resilience",
    "plan_rebalance": "scalepatterns.sharding.rebalance",
    "remaining": "scalepatterns.resilience",
    "resilient": "scalepatterns.resilience",
    "retry": "scalepatterns.resilience",
    "task": "scalepatterns.queue",
    "task_worker": "scalepatterns.queue",
    "timeout": "scalepatterns.resilience",
}

__all__ = [
    "AdaptiveLimiter",
    "AsyncCacheBackend",
    "AsyncCachedFunction",
    "AsyncShardedRedis",
    "AsyncShardedSession",
    "BackendUnavailable",
    "BoundedLoadRing",
    "BrokerBlocked",
    "BulkheadFull",
    "Cache",
    "CacheBackend",
    "CacheBackendError",
    "CacheHit",
    "CacheInfo",
    "CacheLoad",
    "CacheLoadError",
    "CacheMiss",
    "CacheStale",
    "CachedFunction",
    "CircuitBreaker",
    "CircuitOpen",
    "Clock",
    "ConcurrencyLimiter",
    "ConfigurationError",
    "ConsistencyToken",
    "DeadLetters",
    "DeadlineExceeded",
    "Event",
    "EventBus",
    "EventRecorder",
    "FakeClock",
    "FanOutError",
    "HashRing",
    "InvalidToken",
    "JsonSerializer",
    "JumpHash",
    "Listener",
    "Listeners",
    "LoadBalancer",
    "MemoryBackend",
    "MemoryBroker",
    "MemoryDedupStore",
    "MissingDependency",
    "MsgpackSerializer",
    "NoHealthyEndpoint",
    "NoHealthyReplica",
    "OutageGuard",
    "Placement",
    "Producer",
    "PublishError",
    "QueueBackpressure",
    "QueueFull",
    "QueueSpec",
    "RabbitMQBroker",
    "RangeShards",
    "RateLimited",
    "RateLimiter",
    "ReadOnlyViolation",
    "ReadWriteRouter",
    "RebalancePlan",
    "RedisBreakerState",
    "RedisDedupStore",
    "Rendezvous",
    "ReplicaMonitor",
    "Resharder",
    "RetryBudget",
    "RoutingSession",
    "SYSTEM_CLOCK",
    "ScalePatternsError",
    "SerializationError",
    "Serializer",
    "ShardRouter",
    "ShardUnavailable",
    "ShardedBackend",
    "ShardedRedis",
    "ShardedSession",
    "ShardingError",
    "SignatureError",
    "SignedPickleSerializer",
    "SkewReport",
    "SystemClock",
    "TopologyConflict",
    "Worker",
    "__version__",
    "advise_workers",
    "deadline",
    "default_listeners",
    "fallback",
    "pipeline",
    "plan_rebalance",
    "remaining",
    "resilient",
    "retry",
    "task",
    "task_worker",
    "timeout",
]


__getattr__ = lazy_attributes(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)
