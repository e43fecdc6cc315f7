"""`Producer`: publish messages that the broker confirmed, or raise."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.queue.broker import Broker, Outgoing
from scalepatterns.queue.errors import ConnectionLost
from scalepatterns.queue.events import MessagePublished
from scalepatterns.queue.message import encode
from scalepatterns.serializers import JsonSerializer, Serializer

__all__ = ["Producer"]

_log = logging.getLogger("scalepatterns.queue")


class Producer:
    """Publishes persistent messages and returns only once the broker confirmed them.

    Args:
        broker: a `MemoryBroker`, `RabbitMQBroker` or your own `Broker`.
        serializer: encodes bodies (JSON by default).
        confirm_timeout: seconds to wait for the broker's confirms of one call.
        reconnect_timeout: when the connection drops before the confirms arrived, keep
            publishing the unconfirmed messages again (same ids, so consumers with a
            dedup store absorb copies) for up to this many seconds, then raise
            `ConnectionLost`. 0 raises at once.
        declare: declare a default `QueueSpec` for a queue that does not exist yet on
            first publish (pass False to require the queue to exist).

    Raises (from `publish`): `PublishError` (nacked or unroutable), `ConnectionLost`,
    `BrokerBlocked` (flow control), `DeadlineExceeded`, `SerializationError`.

    ```python
    from scalepatterns.queue import MemoryBroker, Producer

    broker = MemoryBroker()
    producer = Producer(broker)
    message_id = producer.publish("emails", {"to": "ada@example.com"})
    ids = producer.publish_many("emails", [{"to": f"user{i}@example.com"} for i in range(3)])
    assert broker.depth("emails") == 4 and len(ids) == 3
    broker.close()
    ```
    """

    def __init__(
        self,
        broker: Broker,
        *,
        serializer: Serializer | None = None,
        confirm_timeout: float = 30.0,
        reconnect_timeout: float = 30.0,
        declare: bool = True,
        clock: Clock = SYSTEM_CLOCK,
        listeners: Listeners | None = None,
    ) -> None:
        if confirm_timeout <= 0:
            raise ConfigurationError("confirm_timeout", confirm_timeout, "seconds > 0")
        if reconnect_timeout < 0:
            raise ConfigurationError("reconnect_timeout", reconnect_timeout, "seconds >= 0")
        self.broker = broker
        self._serializer = serializer or JsonSerializer()
        self._confirm_timeout = confirm_timeout
        self._reconnect_timeout = reconnect_timeout
        self._declare = declare
        self._declared: set[str] = set()
        self._clock = clock
        self._listeners = listeners or default_listeners

    def publish(
        self,
        queue: str,
        body: Any,
        *,
        type: str | None = None,
        delay: float | None = None,
        priority: int | None = None,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Publish one message to `queue`; return its id once the broker confirmed it.

        `delay` (seconds) holds it in a delay queue first; `message_id` defaults to a
        fresh unique id (pass your own to make publishing idempotent end to end).
        """
        data, props = encode(
            body,
            self._serializer,
            self._clock,
            message_id=message_id,
            type=type,
            headers=headers,
            priority=priority,
        )
        self.send(queue, [self._route(queue, data, props, delay)])
        return props.message_id or ""

    def publish_many(
        self,
        queue: str,
        bodies: Iterable[Any],
        *,
        type: str | None = None,
        delay: float | None = None,
        priority: int | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Publish many messages with pipelined confirms; return their ids.

        Returns once every message was confirmed; if some were refused, raises
        `PublishError` naming them (the others were stored).
        """
        batch = []
        for body in bodies:
            data, props = encode(
                body, self._serializer, self._clock, type=type, headers=headers, priority=priority
            )
            batch.append(self._route(queue, data, props, delay))
        if batch:
            self.send(queue, batch)
        return [out.properties.message_id or "" for out in batch]

    def _route(self, queue: str, data: bytes, props: Any, delay: float | None) -> Outgoing:
        if self._declare and queue not in self._declared:
            self.broker.ensure_queue(queue)
            self._declared.add(queue)
        if delay is not None and delay > 0:
            target = self.broker.declare_delay(queue, delay)
            return Outgoing("", target, data, props)
        return Outgoing("", queue, data, props)

    def send(self, target: str, messages: Sequence[Outgoing]) -> None:
        """Publish prepared messages, publishing unconfirmed ones again after a reconnect."""
        deadline = self._clock.monotonic() + self._reconnect_timeout
        pending = list(messages)
        attempt = 0
        while True:
            try:
                self.broker.publish(pending, timeout=self._confirm_timeout)
                break
            except ConnectionLost as exc:
                attempt += 1
                if self._clock.monotonic() >= deadline:
                    raise
                unconfirmed = set(exc.unconfirmed)
                if unconfirmed:
                    # a broker names an id-less message "" (see Broker.publish)
                    pending = [m for m in pending if (m.properties.message_id or "") in unconfirmed]
                _log.warning(
                    "connection lost while publishing to %s; publishing %d again (try %d)",
                    target,
                    len(pending),
                    attempt,
                )
                self._clock.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
        if self._listeners.active:
            self._listeners.emit(MessagePublished(source=target, count=len(messages)))

    def __repr__(self) -> str:
        return f"Producer({self.broker!r})"
