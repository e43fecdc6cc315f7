"""Queue: producers and workers that lose nothing, retry with backoff, dead-letter poison.

Brokers: `MemoryBroker` (in-process), `RabbitMQBroker` (pika) and `RedisStreamsBroker`
(redis-py), the last two loaded on first use, and their asyncio forms `AsyncMemoryBroker`,
`AsyncRabbitMQBroker` and `AsyncRedisStreamsBroker`. Each sync class has an
``Async`` twin with the same methods as coroutines (`AsyncProducer`, `AsyncWorker`,
`AsyncEventBus`, `AsyncDeadLetters`, `AsyncTask`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scalepatterns._deps import lazy_attributes
from scalepatterns.queue.async_producer import AsyncProducer
from scalepatterns.queue.async_worker import AsyncWorker
from scalepatterns.queue.broker import (
    AsyncBroker,
    AsyncSubscription,
    Broker,
    Delivery,
    Outgoing,
    Properties,
    QueueSpec,
    Subscription,
)
from scalepatterns.queue.bus import AsyncEventBus, EventBus
from scalepatterns.queue.deadletters import AsyncDeadLetters, DeadLetters, DeadMessage
from scalepatterns.queue.dedup import (
    AsyncDedupStore,
    Claim,
    DedupStore,
    MemoryDedupStore,
    RedisDedupStore,
)
from scalepatterns.queue.errors import (
    BrokerBlocked,
    BrokerRefused,
    ConnectionLost,
    PublishError,
    Reject,
    TopologyConflict,
)
from scalepatterns.queue.events import (
    MessageDeadLettered,
    MessageDuplicate,
    MessageHandled,
    MessagePublished,
    MessageRetried,
    Reconnected,
)
from scalepatterns.queue.memory import AsyncMemoryBroker, MemoryBroker
from scalepatterns.queue.message import Message
from scalepatterns.queue.producer import Producer
from scalepatterns.queue.retry import RetryPolicy, exponential_backoff
from scalepatterns.queue.tasks import (
    AsyncTask,
    Task,
    TaskRegistry,
    default_registry,
    task,
    task_worker,
)
from scalepatterns.queue.topics import topic_matches
from scalepatterns.queue.worker import Handler, Worker

if TYPE_CHECKING:
    from scalepatterns.queue.rabbitmq import AsyncRabbitMQBroker, RabbitMQBroker
    from scalepatterns.queue.streams import AsyncRedisStreamsBroker, RedisStreamsBroker

__all__ = [
    "AsyncBroker",
    "AsyncDeadLetters",
    "AsyncDedupStore",
    "AsyncEventBus",
    "AsyncMemoryBroker",
    "AsyncProducer",
    "AsyncRabbitMQBroker",
    "AsyncRedisStreamsBroker",
    "AsyncSubscription",
    "AsyncTask",
    "AsyncWorker",
    "Broker",
    "BrokerBlocked",
    "BrokerRefused",
    "Claim",
    "ConnectionLost",
    "DeadLetters",
    "DeadMessage",
    "DedupStore",
    "Delivery",
    "EventBus",
    "Handler",
    "MemoryBroker",
    "MemoryDedupStore",
    "Message",
    "MessageDeadLettered",
    "MessageDuplicate",
    "MessageHandled",
    "MessagePublished",
    "MessageRetried",
    "Outgoing",
    "Producer",
    "Properties",
    "PublishError",
    "QueueSpec",
    "RabbitMQBroker",
    "Reconnected",
    "RedisDedupStore",
    "RedisStreamsBroker",
    "Reject",
    "RetryPolicy",
    "Subscription",
    "Task",
    "TaskRegistry",
    "TopologyConflict",
    "Worker",
    "default_registry",
    "exponential_backoff",
    "task",
    "task_worker",
    "topic_matches",
]


# The RabbitMQ and Redis Streams brokers load only when asked for (pika and redis
# themselves only on construction).
__getattr__ = lazy_attributes(
    __name__,
    {
        "AsyncRabbitMQBroker": "scalepatterns.queue.rabbitmq",
        "AsyncRedisStreamsBroker": "scalepatterns.queue.streams",
        "RabbitMQBroker": "scalepatterns.queue.rabbitmq",
        "RedisStreamsBroker": "scalepatterns.queue.streams",
    },
)
