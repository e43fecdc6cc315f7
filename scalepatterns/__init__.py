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

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first attribute access.
_LAZY: dict[str, str] = {
    "BrokerBlocked": "scalepatterns.queue",
    "DeadLetters": "scalepatterns.queue",
    "EventBus": "scalepatterns.queue",
    "MemoryBroker": "scalepatterns.queue",
    "MemoryDedupStore": "scalepatterns.queue",
    "Producer": "scalepatterns.queue",
    "PublishError": "scalepatterns.queue",
    "QueueSpec": "scalepatterns.queue",
    "RabbitMQBroker": "scalepatterns.queue",
    "RedisDedupStore": "scalepatterns.queue",
    "TopologyConflict": "scalepatterns.queue",
    "Worker": "scalepatterns.queue",
    "task": "scalepatterns.queue",
    "task_worker": "scalepatterns.queue",
}

__all__ = [
    "BackendUnavailable",
    "BrokerBlocked",
    "CircuitOpen",
    "Clock",
    "ConfigurationError",
    "DeadLetters",
    "DeadlineExceeded",
    "Event",
    "EventBus",
    "EventRecorder",
    "FakeClock",
    "JsonSerializer",
    "Listener",
    "Listeners",
    "MemoryBroker",
    "MemoryDedupStore",
    "MissingDependency",
    "MsgpackSerializer",
    "OutageGuard",
    "Producer",
    "PublishError",
    "QueueFull",
    "QueueSpec",
    "RabbitMQBroker",
    "RateLimited",
    "RedisDedupStore",
    "SYSTEM_CLOCK",
    "ScalePatternsError",
    "SerializationError",
    "Serializer",
    "SignatureError",
    "SignedPickleSerializer",
    "SystemClock",
    "TopologyConflict",
    "Worker",
    "__version__",
    "default_listeners",
    "task",
    "task_worker",
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
