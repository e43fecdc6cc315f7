"""`EventBus`: publish events to a topic exchange; each subscriber group gets its own queue."""

from __future__ import annotations

import inspect
import re
import threading
from collections.abc import Mapping
from typing import Any

from scalepatterns._coroutines import run_awaitable
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Listeners
from scalepatterns.queue.broker import Broker, Outgoing, QueueSpec
from scalepatterns.queue.errors import Reject
from scalepatterns.queue.message import Message, encode
from scalepatterns.queue.producer import Producer
from scalepatterns.queue.topics import topic_matches
from scalepatterns.queue.worker import Handler, Worker
from scalepatterns.serializers import JsonSerializer, Serializer

__all__ = ["EventBus"]

_GROUP = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


class _Group:
    def __init__(self, options: dict[str, Any]) -> None:
        self.handlers: list[tuple[str, Handler]] = []
        self.worker: Worker | None = None
        self.options = options

    def __call__(self, message: Message) -> None:
        # The event name travels as the message type: a retried event comes back through
        # a delay queue with another routing key.
        event = message.type or message.routing_key
        handlers = [h for pattern, h in self.handlers if topic_matches(pattern, event)]
        if not handlers:
            raise Reject(f"no handler of this group subscribes to {event!r}")
        for handler in handlers:
            result = handler(message)
            if inspect.isawaitable(result):  # an async def subscriber (on a worker thread)
                run_awaitable(result)


class EventBus:
    """One event, many subscribers: every group receives every matching event once.

    Events go to the durable topic exchange `exchange` with the event name as routing
    key. `subscribe(pattern, handler, group=...)` binds the group's queue
    ``<exchange>.<group>`` to `pattern`; several processes subscribing with the same
    group share its work; each group has its own retries and dead-letter queue. An event
    no group subscribed to is dropped (publishing it is not an error).

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
        serializer: Serializer | None = None,
        clock: Clock = SYSTEM_CLOCK,
        listeners: Listeners | None = None,
        **worker_options: Any,
    ) -> None:
        self.broker = broker
        self.exchange = exchange
        self._serializer = serializer or JsonSerializer()
        self._clock = clock
        self._listeners = listeners
        self._producer = Producer(
            broker, serializer=self._serializer, clock=clock, listeners=listeners, declare=False
        )
        self._worker_options = worker_options
        self._groups: dict[str, _Group] = {}
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
        data, props = encode(
            payload,
            self._serializer,
            self._clock,
            message_id=message_id,
            type=event_type,
            headers=headers,
        )
        self._producer.send(
            self.exchange, [Outgoing(self.exchange, event_type, data, props, mandatory=False)]
        )
        return props.message_id or ""

    def queue_of(self, group: str) -> str:
        return f"{self.exchange}.{group}"

    def subscribe(self, pattern: str, handler: Handler, *, group: str, **options: Any) -> None:
        """Deliver events matching `pattern` (``*`` one word, ``#`` any) to `handler`.

        The group's queue and binding are declared now, so events published from here
        on wait for the group even before `start()`. `options` go to the group's
        `Worker` (concurrency, retry, dedup...) on its first subscription; a later one passes
        the same or none (`ConfigurationError` otherwise: the worker exists already).
        """
        if not _GROUP.match(group):
            raise ConfigurationError("group", group, "1..100 letters, digits or _.:-")
        if not pattern or any(not word for word in pattern.split(".")):
            raise ConfigurationError("pattern", pattern, "dot-separated words, * or #")
        self._declare_exchange()
        queue = self.queue_of(group)
        with self._lock:
            entry = self._groups.get(group)
            if entry is not None and options and options != entry.options:
                raise ConfigurationError(
                    "options",
                    options,
                    f"none, or those of group {group!r}'s first subscribe ({entry.options}): "
                    "its worker exists already",
                )
            if entry is None:
                # Registered only once declared: a failed declaration is retried whole.
                self.broker.declare_queue(QueueSpec(queue))
                entry = _Group(options)
                entry.worker = Worker(
                    self.broker,
                    queue,
                    entry,
                    serializer=self._serializer,
                    clock=self._clock,
                    listeners=self._listeners,
                    **{**self._worker_options, **options},
                )
                self._groups[group] = entry
            self.broker.bind(self.exchange, queue, pattern)
            entry.handlers.append((pattern, handler))
            if self._started and entry.worker is not None:
                entry.worker.start()

    def start(self) -> EventBus:
        """Start a worker per group."""
        with self._lock:
            self._started = True
            workers = [g.worker for g in self._groups.values() if g.worker is not None]
        for worker in workers:
            worker.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        with self._lock:
            self._started = False
            workers = [g.worker for g in self._groups.values() if g.worker is not None]
        for worker in workers:
            worker.stop(timeout)

    def workers(self) -> dict[str, Worker]:
        """Group name -> its worker."""
        return {name: g.worker for name, g in self._groups.items() if g.worker is not None}

    def __enter__(self) -> EventBus:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EventBus(exchange={self.exchange!r}, groups={sorted(self._groups)})"
