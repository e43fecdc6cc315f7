"""`Producer`: publish messages that the broker confirmed, or raise.

`Publishing` holds what `Producer` and `AsyncProducer` share: encoding, which queues
still need declaring, and when to publish unconfirmed messages again.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scalepatterns._checks import seconds
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.queue.broker import Broker, Outgoing
from scalepatterns.queue.errors import ConnectionLost, PublishError
from scalepatterns.queue.events import MessagePublished
from scalepatterns.queue.message import encode
from scalepatterns.serializers import JsonSerializer, Serializer

__all__ = ["Producer", "Publishing", "Resend"]

_log = logging.getLogger("scalepatterns.queue")


def _id(message: Outgoing) -> str:
    return message.properties.message_id or ""


class Resend:
    """Which messages of one publish call are still unconfirmed, and how long to wait
    before publishing them again after a lost connection (or to give up)."""

    def __init__(self, messages: Sequence[Outgoing], clock: Clock, reconnect_timeout: float):
        self.pending = list(messages)
        self._clock = clock
        self._deadline = clock.monotonic() + reconnect_timeout
        self._attempt = 0

    def after(self, error: ConnectionLost | PublishError, target: str) -> float:
        """Seconds to wait before publishing `pending` again; re-raises `error` once the
        reconnect timeout has run out, or when the broker refused a message for good (an
        unroutable one): only nacked messages are worth publishing again."""
        self._attempt += 1
        if isinstance(error, PublishError):
            if not error.nacked or set(error.failed) - set(error.nacked):
                raise error
            again, what = set(error.nacked), "the broker nacked"
        else:
            again, what = set(error.unconfirmed), "connection lost"
        if self._clock.monotonic() >= self._deadline:
            raise error
        if again:  # a broker names an id-less message "" (see Broker.publish)
            self.pending = [m for m in self.pending if _id(m) in again]
        _log.warning(
            "%s while publishing to %s; publishing %d again (try %d)",
            what,
            target,
            len(self.pending),
            self._attempt,
        )
        backoff: float = min(2.0, 0.05 * 2**self._attempt)
        return backoff * random.uniform(0.5, 1.0)


class Publishing:
    """What a producer does besides talking to the broker (shared by both producers)."""

    def __init__(  # noqa: PLR0917 - the producer's own arguments, passed through
        self,
        serializer: Serializer | None,
        confirm_timeout: float,
        reconnect_timeout: float,
        declare: bool,
        clock: Clock,
        listeners: Listeners | None,
    ) -> None:
        seconds("confirm_timeout", confirm_timeout, positive=True)
        seconds("reconnect_timeout", reconnect_timeout)
        self.serializer = serializer or JsonSerializer()
        self.confirm_timeout = confirm_timeout
        self.reconnect_timeout = reconnect_timeout
        self._declare = declare
        self._declared: set[str] = set()
        self.clock = clock
        self.listeners = listeners or default_listeners

    def must_declare(self, queue: str) -> bool:
        """True until `queue` was declared, when declaring is on."""
        return self._declare and queue not in self._declared

    def declared(self, queue: str) -> None:
        self._declared.add(queue)

    def encode(
        self, target: str, body: Any, *, exchange: str = "", mandatory: bool = True, **kw: Any
    ) -> Outgoing:
        """One message to `target` (a routing key) with `encode`'s options."""
        data, props = encode(body, self.serializer, self.clock, **kw)
        return Outgoing(exchange, target, data, props, mandatory=mandatory)

    def resend(self, messages: Sequence[Outgoing]) -> Resend:
        return Resend(messages, self.clock, self.reconnect_timeout)

    def published(self, target: str, count: int) -> None:
        if self.listeners.active:
            self.listeners.emit(MessagePublished(source=target, count=count))


class Producer:
    """Publishes persistent messages and returns only once the broker confirmed them.

    Args:
        broker: a `MemoryBroker`, `RabbitMQBroker` or your own `Broker`.
        serializer: encodes bodies (JSON by default).
        confirm_timeout: seconds to wait for the broker's confirms of one call.
        reconnect_timeout: when the connection drops before the confirms arrived, or
            the broker nacks messages (a quorum queue electing a new leader), keep
            publishing those again (same ids, so consumers with a dedup store absorb
            copies) for up to this many seconds, then raise `ConnectionLost` (or
            `PublishError`). 0 raises at once.
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
        self.broker = broker
        self.publishing = Publishing(
            serializer, confirm_timeout, reconnect_timeout, declare, clock, listeners
        )

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
        target = self.target(queue, delay)
        out = self.publishing.encode(
            target, body, message_id=message_id, type=type, headers=headers, priority=priority
        )
        self.send(queue, [out])
        return _id(out)

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
        target = self.target(queue, delay)
        encode = self.publishing.encode
        batch = [encode(target, b, type=type, headers=headers, priority=priority) for b in bodies]
        if batch:
            self.send(queue, batch)
        return [_id(out) for out in batch]

    def target(self, queue: str, delay: float | None = None) -> str:
        """Where to publish for `queue`: the queue (declared on first use unless
        `declare` is off), or its delay queue for `delay` seconds."""
        if self.publishing.must_declare(queue):
            self.broker.ensure_queue(queue)
            self.publishing.declared(queue)
        if delay is not None and delay > 0:
            return self.broker.declare_delay(queue, delay)
        return queue

    def send(self, target: str, messages: Sequence[Outgoing]) -> None:
        """Publish prepared messages, publishing unconfirmed ones again after a reconnect."""
        resend = self.publishing.resend(messages)
        while True:
            try:
                self.broker.publish(resend.pending, timeout=self.publishing.confirm_timeout)
                break
            except (ConnectionLost, PublishError) as error:
                self.publishing.clock.sleep(resend.after(error, target))
        self.publishing.published(target, len(messages))

    def __repr__(self) -> str:
        return f"Producer({self.broker!r})"
