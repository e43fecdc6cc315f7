"""Cache-aside: `@cache.cached(...)` on memory, Redis, both (two-tier) or shards of Redis.

See `Cache` for the options and the guide at docs/cache.md.
"""

from __future__ import annotations

from scalepatterns._deps import lazy_attributes
from scalepatterns.cache._core import CacheInfo
from scalepatterns.cache.backend import (
    AsyncCacheBackend,
    AsyncLockingBackend,
    AsyncTaggingBackend,
    CacheBackend,
    LockingBackend,
    TaggingBackend,
)
from scalepatterns.cache.cache import AsyncCachedFunction, Cache, CachedFunction
from scalepatterns.cache.cachetools_backend import CachetoolsBackend
from scalepatterns.cache.events import (
    CacheBackendError,
    CacheEvent,
    CacheHit,
    CacheLoad,
    CacheLoadError,
    CacheMiss,
    CacheStale,
)
from scalepatterns.cache.memory import MemoryBackend
from scalepatterns.cache.sharded import Placement, ShardedBackend
from scalepatterns.sharding.errors import ShardUnavailable

__all__ = [
    "AsyncCacheBackend",
    "AsyncCachedFunction",
    "AsyncLockingBackend",
    "AsyncTaggingBackend",
    "Cache",
    "CacheBackend",
    "CacheBackendError",
    "CacheEvent",
    "CacheHit",
    "CacheInfo",
    "CacheLoad",
    "CacheLoadError",
    "CacheMiss",
    "CacheStale",
    "CachedFunction",
    "CachetoolsBackend",
    "LockingBackend",
    "MemoryBackend",
    "Placement",
    "ShardUnavailable",
    "ShardedBackend",
    "TaggingBackend",
]


# The Redis backends load on first use, so importing the cache never imports redis.
__getattr__ = lazy_attributes(
    __name__,
    {
        "AsyncRedisBackend": "scalepatterns.cache.redis_backend",
        "RedisBackend": "scalepatterns.cache.redis_backend",
    },
)
