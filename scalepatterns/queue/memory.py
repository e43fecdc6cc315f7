"""`MemoryBroker`: an in-process broker with RabbitMQ's semantics, for tests and the tour.

Same behaviour as RabbitMQ where scalepatterns relies on it: manual acks, prefetch,
redelivery (flagged) of unsettled messages when a consumer closes, per-queue message
TTL that expires at the head and dead-letters to another queue, dead-letter queues,
topic exchanges, unroutable mandatory messages refused, conflicting declarations refused.
Messages live in memory only: they do not survive the process.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import BackendUnavailable
from scalepatterns.queue.broker import (
    Delivery,
    Outgoing,
    Properties,
    QueueSpec,
    delay_queue,
    delay_queue_arguments,
    delay_tier_ms,
)
from scalepatterns.queue.errors import PublishError, TopologyConflict
from scalepatterns.queue.topics import topic_matches

__all__ = ["AsyncMemoryBroker", "MemoryBroker"]

_log = logging.getLogger("scalepatterns.queue")


@dataclass(slots=True)
class _Msg:
    body: bytes
    properties: Properties
    routing_key: str
    redelivered: bool = False
    expires_at: float | None = None


@dataclass(eq=False)
class _Consumer:
    queue: _Queue
    prefetch: int
    callback: Callable[[Delivery], None]
    unacked: dict[int, _Msg] = field(default_factory=dict)
    active: bool = True


@dataclass(eq=False)
class _Queue:
    name: str
    arguments: dict[str, Any]
    ready: deque[_Msg] = field(default_factory=deque)
    consumers: list[_Consumer] = field(default_factory=list)
    next_consumer: int = 0

    @property
    def ttl(self) -> float | None:
        ttl = self.arguments.get("x-message-ttl")
        return None if ttl is None else ttl / 1000.0


class _MemoryDelivery:
    __slots__ = ("_broker", "_consumer", "_tag", "body", "properties", "redelivered", "routing_key")

    def __init__(
        self, broker: MemoryBroker, consumer: _Consumer | None, tag: int, msg: _Msg
    ) -> None:
        self._broker = broker
        self._consumer = consumer
        self._tag = tag
        self.body = msg.body
        self.properties = msg.properties
        self.routing_key = msg.routing_key
        self.redelivered = msg.redelivered

    def ack(self) -> None:
        self._broker._settle(self._consumer, self._tag, requeue=None)

    def reject(self, *, requeue: bool) -> None:
        self._broker._settle(self._consumer, self._tag, requeue=requeue)


class _MemorySubscription:
    def __init__(self, broker: MemoryBroker, consumer: _Consumer) -> None:
        self._broker = broker
        self._consumer = consumer

    def cancel(self) -> None:
        self._broker._cancel(self._consumer, close=False)

    def close(self) -> None:
        self._broker._cancel(self._consumer, close=True)


class MemoryBroker:
    """An in-process broker; thread-safe. See the module docstring for its semantics.

    ```python
    from scalepatterns.queue import MemoryBroker, Producer

    broker = MemoryBroker()
    Producer(broker).publish("jobs", {"n": 1})
    assert broker.depth("jobs") == 1
    broker.close()
    ```
    """

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._queues: dict[str, _Queue] = {}
        self._exchanges: dict[str, list[tuple[str, str]]] = {}
        self._tags = itertools.count(1)
        self._gets: dict[int, tuple[_Queue, _Msg]] = {}
        self._closed = False
        self._thread: threading.Thread | None = None
        self.published = 0

    # -- topology ---------------------------------------------------------------------

    def _declare(self, name: str, arguments: dict[str, Any]) -> None:
        with self._cond:
            existing = self._queues.get(name)
            if existing is None:
                self._queues[name] = _Queue(name, dict(arguments))
                return
            for key in sorted(set(existing.arguments) | set(arguments)):
                if existing.arguments.get(key) != arguments.get(key):
                    raise TopologyConflict(
                        name,
                        key,
                        f"inequivalent arg {key!r} for queue {name!r}: received "
                        f"{arguments.get(key)!r} but current is {existing.arguments.get(key)!r}",
                    )

    def declare_queue(self, spec: QueueSpec) -> None:
        self._declare(spec.name, spec.arguments())
        self._declare(spec.dead_letter, {"x-queue-type": spec.queue_type})

    def ensure_queue(self, name: str) -> None:
        with self._cond:
            if name in self._queues:
                return
        self.declare_queue(QueueSpec(name))

    def declare_delay(self, queue: str, delay: float) -> str:
        delay_ms = delay_tier_ms(delay)
        name = delay_queue(queue, delay_ms)
        with self._cond:
            work = self._queues.get(queue)
            queue_type = "classic" if work is None else work.arguments.get("x-queue-type")
        self._declare(name, delay_queue_arguments(queue, delay_ms, queue_type or "classic"))
        self._start()
        return name

    def declare_exchange(self, name: str) -> None:
        with self._cond:
            self._exchanges.setdefault(name, [])

    def bind(self, exchange: str, queue: str, pattern: str) -> None:
        with self._cond:
            if queue not in self._queues:
                raise BackendUnavailable("memory", f"no queue {queue!r} to bind")
            bindings = self._exchanges.setdefault(exchange, [])
            if (pattern, queue) not in bindings:
                bindings.append((pattern, queue))

    def delete_queue(self, name: str) -> None:
        with self._cond:
            queue = self._queues.pop(name, None)
            if queue is not None:
                for consumer in queue.consumers:
                    consumer.active = False
            for bindings in self._exchanges.values():
                bindings[:] = [b for b in bindings if b[1] != name]

    def delete_exchange(self, name: str) -> None:
        with self._cond:
            self._exchanges.pop(name, None)

    def queues(self) -> list[str]:
        """Names of the declared queues (for tests and tools)."""
        with self._cond:
            return sorted(self._queues)

    # -- publishing -------------------------------------------------------------------

    def publish(self, messages: Sequence[Outgoing], *, timeout: float = 30.0) -> None:
        failed: dict[str, str] = {}
        target = ""
        with self._cond:
            if self._closed:
                raise BackendUnavailable("memory", "the broker is closed")
            for out in messages:
                target = out.exchange or out.routing_key
                routed = self._route(out.exchange, out.routing_key)
                if not routed:
                    if out.mandatory:
                        failed[out.properties.message_id or "?"] = (
                            f"NO_ROUTE: nothing bound to {out.routing_key!r}"
                        )
                    continue
                for queue in routed:
                    self._enqueue(queue, _Msg(out.body, out.properties, out.routing_key))
                self.published += 1
            self._cond.notify_all()
        if failed:
            raise PublishError(target, failed)

    def _route(self, exchange: str, routing_key: str) -> list[_Queue]:
        if exchange == "":
            queue = self._queues.get(routing_key)
            return [] if queue is None else [queue]
        if exchange not in self._exchanges:
            raise BackendUnavailable("memory", f"NOT_FOUND - no exchange {exchange!r}")
        names = {
            q
            for pattern, q in self._exchanges.get(exchange, ())
            if topic_matches(pattern, routing_key)
        }
        return [self._queues[n] for n in sorted(names) if n in self._queues]

    def _enqueue(self, queue: _Queue, msg: _Msg, *, front: bool = False) -> None:
        ttl = queue.ttl
        msg.expires_at = None if ttl is None else self._clock.monotonic() + ttl
        if front:
            queue.ready.appendleft(msg)
            return
        max_priority = queue.arguments.get("x-max-priority")
        priority = min(msg.properties.priority or 0, max_priority or 0)
        if priority and queue.ready:
            for index, other in enumerate(queue.ready):
                if min(other.properties.priority or 0, max_priority or 0) < priority:
                    queue.ready.insert(index, msg)
                    return
        queue.ready.append(msg)

    def _dead_letter(self, queue: _Queue, msg: _Msg) -> None:
        target = queue.arguments.get("x-dead-letter-routing-key")
        if "x-dead-letter-exchange" not in queue.arguments or target is None:
            return  # dropped, as RabbitMQ does without a dead-letter exchange
        dest = self._queues.get(target)
        if dest is not None:
            self._enqueue(dest, _Msg(msg.body, msg.properties, target))

    # -- consuming --------------------------------------------------------------------

    def consume(
        self, queue: str, *, prefetch: int, on_delivery: Callable[[Delivery], None]
    ) -> _MemorySubscription:
        with self._cond:
            q = self._queues.get(queue)
            if q is None:
                raise BackendUnavailable("memory", f"NOT_FOUND - no queue {queue!r}")
            consumer = _Consumer(q, max(1, prefetch), on_delivery)
            q.consumers.append(consumer)
            self._cond.notify_all()
        self._start()
        return _MemorySubscription(self, consumer)

    def get(self, queue: str) -> Delivery | None:
        with self._cond:
            q = self._queues.get(queue)
            if q is None or not q.ready:
                return None
            msg = q.ready.popleft()
            tag = next(self._tags)
            self._gets[tag] = (q, msg)
            return _MemoryDelivery(self, None, tag, msg)

    def depth(self, queue: str) -> int:
        with self._cond:
            q = self._queues.get(queue)
            return 0 if q is None else len(q.ready)

    def unacked(self, queue: str) -> int:
        """Messages of `queue` delivered and not yet settled."""
        with self._cond:
            q = self._queues.get(queue)
            return 0 if q is None else sum(len(c.unacked) for c in q.consumers)

    def _settle(self, consumer: _Consumer | None, tag: int, *, requeue: bool | None) -> None:
        with self._cond:
            if consumer is None:
                entry = self._gets.pop(tag, None)
                if entry is None:
                    return
                queue, msg = entry
            else:
                found = consumer.unacked.pop(tag, None)
                if found is None:
                    return  # settled twice, or the consumer closed: like a stale tag
                queue, msg = consumer.queue, found
            if requeue is True:
                msg.redelivered = True
                self._enqueue(queue, msg, front=True)
            elif requeue is False:
                self._dead_letter(queue, msg)
            self._cond.notify_all()

    def _cancel(self, consumer: _Consumer, *, close: bool) -> None:
        with self._cond:
            consumer.active = False
            if consumer in consumer.queue.consumers:
                consumer.queue.consumers.remove(consumer)
            if close:
                for tag in sorted(consumer.unacked, reverse=True):
                    msg = consumer.unacked.pop(tag)
                    msg.redelivered = True
                    self._enqueue(consumer.queue, msg, front=True)
            self._cond.notify_all()

    # -- the dispatcher thread --------------------------------------------------------

    def _start(self) -> None:
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._dispatch_loop, name="sp-memory-broker", daemon=True
                )
                self._thread.start()

    def _dispatch_loop(self) -> None:
        while True:
            batch: list[tuple[_Consumer, _MemoryDelivery]] = []
            with self._cond:
                if self._closed:
                    return
                next_expiry = self._expire()
                for queue in list(self._queues.values()):
                    self._assign(queue, batch)
                if not batch:
                    wait = None if next_expiry is None else max(0.0, next_expiry)
                    self._cond.wait(timeout=0.05 if wait is None else min(wait, 0.05))
                    continue
            for consumer, delivery in batch:
                self._deliver(consumer, delivery)

    def _deliver(self, consumer: _Consumer, delivery: _MemoryDelivery) -> None:
        try:
            consumer.callback(delivery)
        except Exception:  # noqa: BLE001 - a consumer's callback must not kill the dispatcher
            _log.exception("on_delivery callback failed for %s", consumer.queue.name)

    def _expire(self) -> float | None:
        """Dead-letter expired heads of TTL queues; seconds until the next expiry."""
        now = self._clock.monotonic()
        soonest: float | None = None
        for queue in list(self._queues.values()):
            if queue.ttl is None:
                continue
            while queue.ready and (queue.ready[0].expires_at or 0.0) <= now:
                self._dead_letter(queue, queue.ready.popleft())
            if queue.ready:
                remaining = (queue.ready[0].expires_at or now) - now
                soonest = remaining if soonest is None else min(soonest, remaining)
        return soonest

    def _assign(self, queue: _Queue, batch: list[tuple[_Consumer, _MemoryDelivery]]) -> None:
        consumers = queue.consumers
        while queue.ready and consumers:
            for offset in range(len(consumers)):
                consumer = consumers[(queue.next_consumer + offset) % len(consumers)]
                if consumer.active and len(consumer.unacked) < consumer.prefetch:
                    queue.next_consumer = (queue.next_consumer + offset + 1) % len(consumers)
                    break
            else:
                return
            msg = queue.ready.popleft()
            tag = next(self._tags)
            consumer.unacked[tag] = msg
            batch.append((consumer, _MemoryDelivery(self, consumer, tag, msg)))

    def close(self) -> None:
        """Stop the dispatcher; messages are discarded."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def __enter__(self) -> MemoryBroker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MemoryBroker({len(self._queues)} queues)"


class _AsyncMemorySubscription:
    def __init__(self, subscription: _MemorySubscription) -> None:
        self._subscription = subscription

    async def cancel(self) -> None:
        self._subscription.cancel()

    async def close(self) -> None:
        self._subscription.close()


class AsyncMemoryBroker:
    """A `MemoryBroker` for asyncio code: the same queues behind awaitable methods.

    It wraps `broker` (a new one by default, kept as `.sync`), so sync and async
    producers and workers can share queues. Deliveries reach `on_delivery` on the loop
    that started consuming.

    ```python
    import asyncio
    from scalepatterns.queue import AsyncMemoryBroker, AsyncProducer

    async def main() -> None:
        broker = AsyncMemoryBroker()
        await AsyncProducer(broker).publish("jobs", {"n": 1})
        assert await broker.depth("jobs") == 1
        await broker.close()

    asyncio.run(main())
    ```
    """

    def __init__(self, broker: MemoryBroker | None = None, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.sync = broker if broker is not None else MemoryBroker(clock=clock)

    async def declare_queue(self, spec: QueueSpec) -> None:
        self.sync.declare_queue(spec)

    async def ensure_queue(self, name: str) -> None:
        self.sync.ensure_queue(name)

    async def declare_delay(self, queue: str, delay: float) -> str:
        return self.sync.declare_delay(queue, delay)

    async def declare_exchange(self, name: str) -> None:
        self.sync.declare_exchange(name)

    async def bind(self, exchange: str, queue: str, pattern: str) -> None:
        self.sync.bind(exchange, queue, pattern)

    async def publish(self, messages: Sequence[Outgoing], *, timeout: float = 30.0) -> None:
        self.sync.publish(messages, timeout=timeout)

    async def consume(
        self, queue: str, *, prefetch: int, on_delivery: Callable[[Delivery], None]
    ) -> _AsyncMemorySubscription:
        loop = asyncio.get_running_loop()

        def to_loop(delivery: Delivery) -> None:  # on the dispatcher thread
            loop.call_soon_threadsafe(on_delivery, delivery)

        return _AsyncMemorySubscription(
            self.sync.consume(queue, prefetch=prefetch, on_delivery=to_loop)
        )

    async def get(self, queue: str) -> Delivery | None:
        return self.sync.get(queue)

    async def depth(self, queue: str) -> int:
        return self.sync.depth(queue)

    async def delete_queue(self, name: str) -> None:
        self.sync.delete_queue(name)

    async def delete_exchange(self, name: str) -> None:
        self.sync.delete_exchange(name)

    async def close(self) -> None:
        """Stop the dispatcher (off the loop: it joins a thread)."""
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> AsyncMemoryBroker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncMemoryBroker({self.sync!r})"
