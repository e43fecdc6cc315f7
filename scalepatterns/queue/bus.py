"""`EventBus` and `AsyncEventBus`: publish events to a topic exchange; each subscriber
group gets its own queue and worker."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Literal, TypeVar

from scalepatterns._coroutines import call_async, is_coroutine_callable
from scalepatterns._steps import Flow, adrive, drive
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Listeners
from scalepatterns.queue.async_producer import AsyncProducer
from scalepatterns.queue.async_worker import AsyncWorker
from scalepatterns.queue.broker import AsyncBroker, Broker, Outgoing, QueueSpec
from scalepatterns.queue.errors import Reject
from scalepatterns.queue.handling import Handler
from scalepatterns.queue.message import Message
from scalepatterns.queue.producer import Producer
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


class _Bus(Generic[W]):
    """What both buses do, as flows of I/O steps (see `steps.py`): the groups and their
    checks, declaring the exchange once, publishing, subscribing."""

    def __init__(  # noqa: PLR0917 - the bus's own arguments, passed through
        self,
        broker: Any,
        producer: Producer | AsyncProducer,
        exchange: str,
        queue_type: Literal["classic", "quorum"],
        make_worker: Callable[..., W],
        worker_options: dict[str, Any],
    ) -> None:
        self.broker = broker
        self.producer = producer
        self.exchange = exchange
        self.queue_type = queue_type
        self._make_worker: Callable[..., W] = make_worker
        self._worker_options = {
            "serializer": producer.publishing.serializer,
            "clock": producer.publishing.clock,
            "listeners": producer.publishing.listeners,
            **worker_options,
        }
        self.groups: dict[str, _Group[W]] = {}
        self.started = False
        self._declared = False

    def queue_of(self, group: str) -> str:
        return f"{self.exchange}.{group}"

    def workers(self) -> dict[str, W]:
        """Group name -> its worker."""
        return {name: g.worker for name, g in self.groups.items() if g.worker is not None}

    def _declare_exchange(self) -> Flow[None]:
        if not self._declared:
            yield self.broker.declare_exchange, (self.exchange,)
            self._declared = True

    def publish(
        self,
        event_type: str,
        payload: Any,
        headers: Mapping[str, Any] | None,
        message_id: str | None,
    ) -> Flow[str]:
        # The event name is the routing key and the type; nobody subscribed is no error.
        out = self.producer.publishing.encode(
            event_type,
            payload,
            exchange=self.exchange,
            mandatory=False,
            type=event_type,
            headers=headers,
            message_id=message_id,
        )
        yield from self.send([out])
        return out.properties.message_id or ""

    def send(self, events: Sequence[Outgoing]) -> Flow[None]:
        yield from self._declare_exchange()
        yield self.producer.send, (self.exchange, events)

    def subscribe(
        self, pattern: str, handler: Handler, group: str, options: dict[str, Any]
    ) -> Flow[None]:
        """Check, declare, bind; the group's worker is made (and declared) on its first
        subscription, and started if the bus runs."""
        if not _GROUP.match(group):
            raise ConfigurationError("group", group, "1..100 letters, digits or _.:-")
        if not pattern or any(not word for word in pattern.split(".")):
            raise ConfigurationError("pattern", pattern, "dot-separated words, * or #")
        entry = self.groups.get(group)
        if entry is not None and options and options != entry.options:
            raise ConfigurationError(
                "options",
                options,
                f"none, or those of group {group!r}'s first subscribe ({entry.options}): "
                "its worker exists already",
            )
        yield from self._declare_exchange()
        queue = self.queue_of(group)
        if entry is None:
            entry = _Group[W](options)
            entry.worker = self._make_worker(
                self.broker,
                QueueSpec(queue, queue_type=self.queue_type),
                entry,
                **{**self._worker_options, **options},
            )
            # Registered only once declared: a failed declaration is retried whole.
            yield self.broker.declare_queue, (entry.worker.spec,)
            self.groups[group] = entry
        yield self.broker.bind, (self.exchange, queue, pattern)
        entry.handlers.append((pattern, handler))
        if self.started and entry.worker is not None:
            yield entry.worker.start, ()


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
        producer = Producer(
            broker, serializer=serializer, clock=clock, listeners=listeners, declare=False
        )
        self._bus = _Bus(broker, producer, exchange, queue_type, Worker, worker_options)
        self.broker, self.exchange, self.queue_type = broker, exchange, queue_type
        self._lock = threading.Lock()

    def publish(
        self,
        event_type: str,
        payload: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Publish an event; returns its id once the broker confirmed it."""
        return drive(self._bus.publish(event_type, payload, headers, message_id))

    def send(self, events: Sequence[Outgoing]) -> None:
        """Publish prepared events (an outbox relay's): each `Outgoing`'s routing key is
        its event name; confirmed, with unconfirmed ones published again as by `publish`."""
        drive(self._bus.send(events))

    def queue_of(self, group: str) -> str:
        return self._bus.queue_of(group)

    def subscribe(self, pattern: str, handler: Handler, *, group: str, **options: Any) -> None:
        """Deliver events matching `pattern` (``*`` one word, ``#`` any) to `handler`.

        The group's queue and binding are declared now, so events published from here
        on wait for the group even before `start()`. `options` go to the group's
        `Worker` (concurrency, retry, dedup...) on its first subscription; a later one passes
        the same or none (`ConfigurationError` otherwise: the worker exists already).
        """
        with self._lock:
            drive(self._bus.subscribe(pattern, handler, group, options))

    def start(self) -> EventBus:
        """Start a worker per group."""
        with self._lock:
            self._bus.started = True
            workers = list(self._bus.workers().values())
        for worker in workers:
            worker.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        with self._lock:
            self._bus.started = False
            workers = list(self._bus.workers().values())
        for worker in workers:
            worker.stop(timeout)

    def workers(self) -> dict[str, Worker]:
        """Group name -> its worker."""
        return self._bus.workers()

    def __enter__(self) -> EventBus:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EventBus(exchange={self.exchange!r}, groups={sorted(self._bus.groups)})"


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
        producer = AsyncProducer(
            broker, serializer=serializer, clock=clock, listeners=listeners, declare=False
        )
        self._bus = _Bus(broker, producer, exchange, queue_type, AsyncWorker, worker_options)
        self.broker, self.exchange, self.queue_type = broker, exchange, queue_type
        self._lock = asyncio.Lock()

    async def publish(
        self,
        event_type: str,
        payload: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Publish an event; returns its id once the broker confirmed it."""
        return await adrive(self._bus.publish(event_type, payload, headers, message_id))

    async def send(self, events: Sequence[Outgoing]) -> None:
        """As `EventBus.send`."""
        await adrive(self._bus.send(events))

    def queue_of(self, group: str) -> str:
        return self._bus.queue_of(group)

    async def subscribe(
        self, pattern: str, handler: Handler, *, group: str, **options: Any
    ) -> None:
        """As `EventBus.subscribe`; `options` go to the group's `AsyncWorker`."""
        async with self._lock:
            await adrive(self._bus.subscribe(pattern, handler, group, options))

    async def start(self) -> AsyncEventBus:
        """Start a worker per group."""
        async with self._lock:
            self._bus.started = True
            for worker in self._bus.workers().values():
                await worker.start()
        return self

    async def stop(self, timeout: float | None = None) -> None:
        async with self._lock:
            self._bus.started = False
            for worker in self._bus.workers().values():
                await worker.stop(timeout)

    def workers(self) -> dict[str, AsyncWorker]:
        """Group name -> its worker."""
        return self._bus.workers()

    async def __aenter__(self) -> AsyncEventBus:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"AsyncEventBus(exchange={self.exchange!r}, groups={sorted(self._bus.groups)})"
