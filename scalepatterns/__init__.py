"""scalepatterns: scalability building blocks for Python services.

The public API. Foundation names are imported here directly; the blocks' names load on
first access, so `import scalepatterns` imports no server client (redis, pika,
sqlalchemy) until a backend that needs one is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first attribute access.
_LAZY: dict[str, str] = {
    "AsyncCacheBackend": "scalepatterns.cache",
    "AsyncCachedFunction": "scalepatterns.cache",
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
    "MemoryBackend": "scalepatterns.cache",
    "ShardedBackend": "scalepatterns.cache",
}

__all__ = [
    "AsyncCacheBackend",
    "AsyncCachedFunction",
    "BackendUnavailable",
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
    "CircuitOpen",
    "Clock",
    "ConfigurationError",
    "DeadlineExceeded",
    "Event",
    "EventRecorder",
    "FakeClock",
    "JsonSerializer",
    "Listener",
    "Listeners",
    "MemoryBackend",
    "MissingDependency",
    "MsgpackSerializer",
    "OutageGuard",
    "QueueFull",
    "RateLimited",
    "SYSTEM_CLOCK",
    "ScalePatternsError",
    "SerializationError",
    "Serializer",
    "ShardedBackend",
    "SignatureError",
    "SignedPickleSerializer",
    "SystemClock",
    "__version__",
    "default_listeners",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'scalepatterns' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
