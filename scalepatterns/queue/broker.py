"""The small Protocols a broker implements, and the values that cross them.

`Broker` is the sync one (`MemoryBroker`, `RabbitMQBroker`), `AsyncBroker` the awaitable
one (`AsyncMemoryBroker`, `AsyncRabbitMQBroker`): the same methods, as coroutines. The
producer, worker, task and event-bus layers only talk to these Protocols, so a broker of
your own works with all of them once it passes `scalepatterns.queue.testing`'s suite.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from scalepatterns.errors import ConfigurationError

__all__ = [
    "AsyncBroker",
    "AsyncSubscription",
    "Broker",
    "Delivery",
    "Outgoing",
    "Properties",
    "QueueSpec",
    "Subscription",
    "dead_letter_queue",
    "delay_queue",
    "delay_tier_ms",
]


@dataclass(frozen=True, slots=True)
class Properties:
    """The AMQP basic properties scalepatterns reads and writes."""

    message_id: str | None = None
    type: str | None = None
    content_type: str | None = None
    timestamp: int | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    priority: int | None = None
    persistent: bool = True


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish: to `exchange` ("" is the default exchange) with `routing_key`.

    `mandatory` makes an unroutable message an error instead of a silent drop.
    """

    exchange: str
    routing_key: str
    body: bytes
    properties: Properties
    mandatory: bool = True


class Delivery(Protocol):
    """A message handed to a consumer; settle it exactly once with `ack` or `reject`.

    Both are safe to call from any thread, and never block (the sync and async brokers
    hand out the same kind of delivery): the settlement goes out with the next batch.
    """

    body: bytes
    properties: Properties
    routing_key: str
    redelivered: bool

    def ack(self) -> None: ...

    def reject(self, *, requeue: bool) -> None: ...


class Subscription(Protocol):
    """A running consumer."""

    def cancel(self) -> None:
        """Stop new deliveries; deliveries already received can still be settled."""
        ...

    def close(self) -> None:
        """Stop and give every unsettled delivery back to the queue (redelivered)."""
        ...


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A work queue and its dead-letter queue (``<name>.dead``).

    Args:
        name: the queue's name.
        queue_type: ``"classic"`` or ``"quorum"`` (replicated; no priorities).
        max_priority: enable priorities 0..max_priority (classic queues only).
        durable: survive a broker restart (messages are published persistent).
    """

    name: str
    queue_type: Literal["classic", "quorum"] = "classic"
    max_priority: int | None = None
    durable: bool = True

    def __post_init__(self) -> None:
        if not self.name or len(self.name.encode()) > 200:
            # RabbitMQ takes 255 bytes; the delay and dead-letter queues add a suffix.
            raise ConfigurationError("name", self.name, "a queue name of 1..200 bytes in UTF-8")
        if self.queue_type not in ("classic", "quorum"):
            raise ConfigurationError("queue_type", self.queue_type, '"classic" or "quorum"')
        if self.max_priority is not None:
            if self.queue_type == "quorum":
                raise ConfigurationError(
                    "max_priority", self.max_priority, "None for quorum queues"
                )
            if not 1 <= self.max_priority <= 255:
                raise ConfigurationError("max_priority", self.max_priority, "1..255")

    @property
    def dead_letter(self) -> str:
        return dead_letter_queue(self.name)

    def arguments(self) -> dict[str, Any]:
        """The queue's `x-` arguments: its type, priorities and where rejects go."""
        args: dict[str, Any] = {
            "x-queue-type": self.queue_type,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dead_letter,
        }
        if self.max_priority is not None:
            args["x-max-priority"] = self.max_priority
        return args


def dead_letter_queue(queue: str) -> str:
    """The name of `queue`'s dead-letter queue."""
    return f"{queue}.dead"


def delay_tier_ms(seconds: float) -> int:
    """Round a delay to a tier: two significant digits in milliseconds (at least 1 ms).

    Each tier is one delay queue, so rounding bounds how many exist (at most 90 per
    decade) while keeping every delay within 5% of what was asked.
    """
    ms: int = max(1, round(seconds * 1000))
    digits = len(str(ms))
    if digits <= 2:
        return ms
    unit = 10 ** (digits - 2)
    return int(max(unit, round(ms / unit) * unit))


def delay_queue(queue: str, delay_ms: int) -> str:
    """The name of the delay queue that feeds `queue` after `delay_ms`."""
    return f"{queue}.delay.{delay_ms}ms"


def delay_queue_arguments(queue: str, delay_ms: int, queue_type: str = "classic") -> dict[str, Any]:
    """Messages wait `delay_ms` at the head, then dead-letter back into `queue`.

    The delay queue deletes itself after being unused for a while (`x-expires`), long
    after its last message expired. A quorum delay queue moves its messages at least once
    (``x-dead-letter-strategy``), which RabbitMQ allows only with ``x-overflow`` set to
    ``reject-publish``.
    """
    arguments: dict[str, Any] = {
        "x-queue-type": queue_type,
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        "x-expires": delay_ms * 2 + 600_000,
    }
    if queue_type == "quorum":
        arguments["x-dead-letter-strategy"] = "at-least-once"
        arguments["x-overflow"] = "reject-publish"
    return arguments


class Broker(Protocol):
    """What the producer, worker, task and event layers need from a broker."""

    def declare_queue(self, spec: QueueSpec) -> None:
        """Declare the queue and its dead-letter queue (idempotent).

        Raises `TopologyConflict` naming the argument if it exists with other arguments.
        """
        ...

    def ensure_queue(self, name: str) -> None:
        """Declare `QueueSpec(name)` unless a queue of that name already exists."""
        ...

    def declare_delay(self, queue: str, delay: float) -> str:
        """Declare the delay queue that feeds `queue` after `delay` seconds (rounded to
        its tier, see `delay_tier_ms`); return its name."""
        ...

    def declare_exchange(self, name: str) -> None:
        """Declare a durable topic exchange (idempotent)."""
        ...

    def bind(self, exchange: str, queue: str, pattern: str) -> None:
        """Declare a durable topic `exchange` and bind `queue` to it with `pattern`."""
        ...

    def publish(self, messages: Sequence[Outgoing], *, timeout: float) -> None:
        """Publish and return once the broker confirmed every message.

        Raises `PublishError` for nacked or unroutable messages (after the others were
        confirmed), `ConnectionLost` if the connection dropped before all confirms,
        `BrokerBlocked` under flow control, `DeadlineExceeded` after `timeout`.
        """
        ...

    def consume(
        self, queue: str, *, prefetch: int, on_delivery: Callable[[Delivery], None]
    ) -> Subscription:
        """Start delivering `queue`'s messages, at most `prefetch` unsettled at a time.

        `on_delivery` runs on the broker's own thread and must return quickly.
        """
        ...

    def get(self, queue: str) -> Delivery | None:
        """Take one message without a consumer (None if the queue is empty)."""
        ...

    def depth(self, queue: str) -> int:
        """Messages ready in `queue` (not counting unacknowledged ones)."""
        ...

    def delete_queue(self, name: str) -> None: ...

    def delete_exchange(self, name: str) -> None: ...

    def close(self) -> None: ...


class AsyncSubscription(Protocol):
    """A running consumer of an `AsyncBroker`."""

    async def cancel(self) -> None:
        """Stop new deliveries; deliveries already received can still be settled."""
        ...

    async def close(self) -> None:
        """Stop and give every unsettled delivery back to the queue (redelivered)."""
        ...


class AsyncBroker(Protocol):
    """`Broker`'s methods as coroutines, for asyncio services; none blocks the loop."""

    async def declare_queue(self, spec: QueueSpec) -> None: ...

    async def ensure_queue(self, name: str) -> None: ...

    async def declare_delay(self, queue: str, delay: float) -> str: ...

    async def declare_exchange(self, name: str) -> None: ...

    async def bind(self, exchange: str, queue: str, pattern: str) -> None: ...

    async def publish(self, messages: Sequence[Outgoing], *, timeout: float) -> None:
        """As `Broker.publish`. A cancelled call never reports a message as sent."""
        ...

    async def consume(
        self, queue: str, *, prefetch: int, on_delivery: Callable[[Delivery], None]
    ) -> AsyncSubscription:
        """As `Broker.consume`; `on_delivery` runs on the event loop and must return
        quickly (hand the delivery to a task)."""
        ...

    async def get(self, queue: str) -> Delivery | None: ...

    async def depth(self, queue: str) -> int: ...

    async def delete_queue(self, name: str) -> None: ...

    async def delete_exchange(self, name: str) -> None: ...

    async def close(self) -> None: ...
