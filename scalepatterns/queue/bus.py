"""`EventBus` and `AsyncEventBus`: publish events to a topic exchange; each subscriber
group gets its own queue and worker."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Generic, Literal, TypeVar

from scalepatterns._coroutines import call_async, is_coroutine_callable
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Listeners
from scalepatterns.queue.async_producer import AsyncProducer
from scalepatterns.queue.async_worker import AsyncWorker
from scalepatterns.queue.broker import AsyncBroker, Broker, Outgoing, QueueSpec
from scalepatterns.queue.errors import Reject
from scalepatterns.queue.handling import Handler
from scalepatterns.queue.message import Message
from scalepatterns.queue.producer import Producer, Publishing
from scalepatterns.queue.topics import topic_matches
from scalepatterns.queue.worker import Worker
from scalepatterns.serializers import Serializer

__all__ = ["AsyncEventBus", "EventBus"]

_GROUP = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
W = TypeVar("W", Worker, AsyncWorker)


class _Group(Generic[W]):
    """One subscriber group: its handlers by pattern, and the worker of its queue."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.handlers: list[tuple[str, Handler]] = []
        self.options = options
        self.worker: W | None = None

    def matching(self, message: Message) -> list[Handler]:
        # The event name travels as the message type: a retried event comes back through
        # a delay queue with another routing key.
        event = message.type or message.routing_key
        handlers = [h for pattern, h in self.handlers if topic_matches(pattern, event)]
        if not handlers:
            raise Reject(f"no handler of this group subscribes to {event!r}")
        return handlers

    def __call__(self, message: Message) -> Any:
        """For a `Worker`: the handlers in order; with an ``async def`` among them, a
        coroutine the worker runs on its event loop."""
        if any(is_coroutine_callable(h) for _, h in self.handlers):
            return self.acall(message)
        for handler in self.matching(message):
            handler(message)
        return None

    async def acall(self, message: Message) -> None:
        """For an `AsyncWorker`: the handlers in order, plain ones in a thread."""
        for handler in self.matching(message):
            await call_async(handler, message)


class _Groups(Generic[W]):
    """The groups of one bus, and the checks a subscription must pass."""

    def __init__(self, exchange: str, worker_options: dict[str, Any]) -> None:
        self.exchange = exchange
        self.worker_options = worker_options
        self.by_name: dict[str, _Group[W]] = {}

    def queue_of(self, group: str) -> str:
        return f"{self.exchange}.{group}"

    def existing(self, pattern: str, group: str, options: dict[str, Any]) -> _Group[W] | None:
        """The group `group` if it exists, after checking the subscription's arguments."""
        if not _GROUP.match(group):
            raise ConfigurationError("group", group, "1..100 letters, digits or _.:-")
        if not pattern or any(not word for word in pattern.split(".")):
            raise ConfigurationError("pattern", pattern, "dot-separated words, * or #")
        entry = self.by_name.get(group)
        if entry is not None and options and options != entry.options:
            raise ConfigurationError(
                "options",
                options,
                f"none, or those of group {group!r}'s first subscribe ({entry.options}): "
                "its worker exists already",
            )
        return entry

    def worker_arguments(self, options: dict[str, Any]) -> dict[str, Any]:
        return {**self.worker_options, **options}

    def workers(self) -> dict[str, W]:
        """Group name -> its worker."""
        return {name: g.worker for name, g in self.by_name.items() if g.worker is not None}


def _event(
    publishing: Publishing, exchange: str, event_type: str, payload: Any, **kw: Any
) -> Outgoing:
    """An event: the name is its routing key and type; nobody subscribed is no error."""
    return publishing.encode(
        event_type, payload, exchange=exchange, mandatory=False, type=event_type, **kw
    )


class EventBus:
    """One event, many subscribers: every group receives every matching event once.

    Events go to the durable topic exchange `exchange` with the event name as routing
    key. `subscribe(pattern, handler, group=...)` binds the group's queue
    ``<exchange>.<group>`` to `pattern`; several processes subscribing with the same
    group share its work; each group has its own retries and dead-letter queue. An event
    no group subscribed to is dropped (publishing it is not an error). `queue_type`
    ``"quorum"`` makes the groups' queues quorum queues (on a RabbitMQ cluster).

    ```python
    import threading
    from scalepatterns.queue import EventBus, MemoryBroker

    broker = MemoryBroker()
    bus = EventBus(broker)
    seen = []
    done = threading.Event()
    bus.subscribe("user.*", lambda m: (seen.append(m.body), done.set()), group="email")
    with bus:
        bus.publish("user.signed_up", {"id": 7})
        assert done.wait(5)
    assert seen == [{"id": 7}]
    broker.close()
    ```
    """

    def __init__(
        self,
        broker: Broker,
        *,
        exchange: str = "sp.events",
        queue_type: Literal["classic", "quorum"] = "classic",
        serializer: Serializer | None = None,
        clock: Clock = SYSTEM_CLOCK,
        listeners: Listeners | None = None,
        **worker_options: Any,
    ) -> None:
        self.broker = broker
        self.exchange = exchange
        self.queue_type = queue_type
        self._producer = Producer(
            broker, serializer=serializer, clock=clock, listeners=listeners, declare=False
        )
        self._groups: _Groups[Worker] = _Groups(
            exchange,
            {
                "serializer": self._producer.publishing.serializer,
                "clock": clock,
                "listeners": listeners,
                **worker_options,
            },
        )
        self._lock = threading.Lock()
        self._started = False
        self._declared = False

    def _declare_exchange(self) -> None:
        if not self._declared:
            self.broker.declare_exchange(self.exchange)
            self._declared = True

    def publish(
        self,
        event_type: str,
        payload: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Publish an event; returns its id once the broker confirmed it."""
        self._declare_exchange()
        out = _event(
            self._producer.publishing,
            self.exchange,
            event_type,
            payload,
            headers=headers,
            message_id=message_id,
        )
        self._producer.send(self.exchange, [out])
        return out.properties.message_id or ""

    def send(self, events: Sequence[Outgoing]) -> None:
        """Publish prepared events (an outbox relay's): each `Outgoing`'s routing key is
        its event name; confirmed, with unconfirmed ones published again as by `publish`."""
        self._declare_exchange()
        self._producer.send(self.exchange, events)

    def queue_of(self, group: str) -> str:
        return self._groups.queue_of(group)

    def subscribe(self, pattern: str, handler: Handler, *, group: str, **options: Any) -> None:
        """Deliver events matching `pattern` (``*`` one word, ``#`` any) to `handler`.

        The group's queue and binding are declared now, so events published from here
        on wait for the group even before `start()`. `options` go to the group's
        `Worker` (concurrency, retry, dedup...) on its first subscription; a later one passes
        the same or none (`ConfigurationError` otherwise: the worker exists already).
        """
        with self._lock:
            entry = self._groups.existing(pattern, group, options)
            self._declare_exchange()
            if entry is None:
                entry = _Group[Worker](options)
                entry.worker = Worker(
                    self.broker,
                    QueueSpec(self.queue_of(group), queue_type=self.queue_type),
                    entry,
                    **self._groups.worker_arguments(options),
                )
                # Registered only once declared: a failed declaration is retried whole.
                self.broker.declare_queue(entry.worker.spec)
                self._groups.by_name[group] = entry
            self.broker.bind(self.exchange, self.queue_of(group), pattern)
            entry.handlers.append((pattern, handler))
            if self._started and entry.worker is not None:
                entry.worker.start()

    def start(self) -> EventBus:
        """Start a worker per group."""
        with self._lock:
            self._started = True
            workers = list(self._groups.workers().values())
        for worker in workers:
            worker.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        with self._lock:
            self._started = False
            workers = list(self._groups.workers().values())
        for worker in workers:
            worker.stop(timeout)

    def workers(self) -> dict[str, Worker]:
        """Group name -> its worker."""
        return self._groups.workers()

    def __enter__(self) -> EventBus:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EventBus(exchange={self.exchange!r}, groups={sorted(self._groups.by_name)})"


class AsyncEventBus:
    """`EventBus` for asyncio services, on an `AsyncBroker`: `publish`, `subscribe`,
    `start` and `stop` are coroutines, and each group runs an `AsyncWorker`.

    ```python
    import asyncio
    from scalepatterns.queue import AsyncEventBus, AsyncMemoryBroker

    async def main() -> None:
        broker = AsyncMemoryBroker()
        bus = AsyncEventBus(broker)
        seen = asyncio.Queue()

        async def welcome(message) -> None:
            await seen.put(message.body)

        await bus.subscribe("user.*", welcome, group="email")
        async with bus:
            await bus.publish("user.signed_up", {"id": 7})
            assert await asyncio.wait_for(seen.get(), 5) == {"id": 7}
        await broker.close()

    asyncio.run(main())
    ```
    """

    def __init__(
        self,
        broker: AsyncBroker,
        *,
        exchange: str = "sp.events",
        queue_type: Literal["classic", "quorum"] = "classic",
        serializer: Serializer | None = None,
        clock: Clock = SYSTEM_CLOCK,
        listeners: Listeners | None = None,
        **worker_options: Any,
    ) -> None:
        self.broker = broker
        self.exchange = exchange
        self.queue_type = queue_type
        self._producer = AsyncProducer(
            broker, serializer=serializer, clock=clock, listeners=listeners, declare=False
        )
        self._groups: _Groups[AsyncWorker] = _Groups(
            exchange,
            {
                "serializer": self._producer.publishing.serializer,
                "clock": clock,
                "listeners": listeners,
                **worker_options,
            },
        )
        self._lock = asyncio.Lock()
        self._started = False
        self._declared = False

    async def _declare_exchange(self) -> None:
        if not self._declared:
            await self.broker.declare_exchange(self.exchange)
            self._declared = True

    async def publish(
        self,
        event_type: str,
        payload: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Publish an event; returns its id once the broker confirmed it."""
        await self._declare_exchange()
        out = _event(
            self._producer.publishing,
            self.exchange,
            event_type,
            payload,
            headers=headers,
            message_id=message_id,
        )
        await self._producer.send(self.exchange, [out])
        return out.properties.message_id or ""

    async def send(self, events: Sequence[Outgoing]) -> None:
        """As `EventBus.send`."""
        await self._declare_exchange()
        await self._producer.send(self.exchange, events)

    def queue_of(self, group: str) -> str:
        return self._groups.queue_of(group)

    async def subscribe(
        self, pattern: str, handler: Handler, *, group: str, **options: Any
    ) -> None:
        """As `EventBus.subscribe`; `options` go to the group's `AsyncWorker`."""
        async with self._lock:
            entry = self._groups.existing(pattern, group, options)
            await self._declare_exchange()
            if entry is None:
                entry = _Group[AsyncWorker](options)
                entry.worker = AsyncWorker(
                    self.broker,
                    QueueSpec(self.queue_of(group), queue_type=self.queue_type),
                    entry,
                    **self._groups.worker_arguments(options),
                )
                await self.broker.declare_queue(entry.worker.spec)
                self._groups.by_name[group] = entry
            await self.broker.bind(self.exchange, self.queue_of(group), pattern)
            entry.handlers.append((pattern, handler))
            if self._started and entry.worker is not None:
                await entry.worker.start()

    async def start(self) -> AsyncEventBus:
        """Start a worker per group."""
        async with self._lock:
            self._started = True
            for worker in self._groups.workers().values():
                await worker.start()
        return self

    async def stop(self, timeout: float | None = None) -> None:
        async with self._lock:
            self._started = False
            for worker in self._groups.workers().values():
                await worker.stop(timeout)

    def workers(self) -> dict[str, AsyncWorker]:
        """Group name -> its worker."""
        return self._groups.workers()

    async def __aenter__(self) -> AsyncEventBus:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"AsyncEventBus(exchange={self.exchange!r}, groups={sorted(self._groups.by_name)})"
