"""Queue: producers and workers that lose nothing, retry with backoff, dead-letter poison.

Brokers: `MemoryBroker` (in-process) and `RabbitMQBroker` (pika, loaded on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scalepatterns._deps import lazy_attributes
from scalepatterns.queue.broker import Broker, Delivery, Outgoing, Properties, QueueSpec
from scalepatterns.queue.bus import EventBus
from scalepatterns.queue.deadletters import DeadLetters, DeadMessage
from scalepatterns.queue.dedup import Claim, DedupStore, MemoryDedupStore, RedisDedupStore
from scalepatterns.queue.errors import (
    BrokerBlocked,
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
from scalepatterns.queue.memory import MemoryBroker
from scalepatterns.queue.message import Message
from scalepatterns.queue.producer import Producer
from scalepatterns.queue.retry import RetryPolicy, exponential_backoff
from scalepatterns.queue.tasks import Task, TaskRegistry, default_registry, task, task_worker
from scalepatterns.queue.topics import topic_matches
from scalepatterns.queue.worker import Handler, Worker

if TYPE_CHECKING:
    from scalepatterns.queue.rabbitmq import RabbitMQBroker

__all__ = [
    "Broker",
    "BrokerBlocked",
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
    "Reject",
    "RetryPolicy",
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


# The RabbitMQ adapter loads only when asked for (pika itself only on construction).
__getattr__ = lazy_attributes(__name__, {"RabbitMQBroker": "scalepatterns.queue.rabbitmq"})
