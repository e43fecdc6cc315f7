"""Inspect and re-drive a queue's dead letters."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scalepatterns._steps import Flow, adrive, drive
from scalepatterns.queue.broker import AsyncBroker, Broker, Delivery, Outgoing, dead_letter_queue
from scalepatterns.queue.handling import (
    ERROR_MESSAGE_HEADER,
    ERROR_TYPE_HEADER,
    FAILED_AT_HEADER,
    ORIGINAL_QUEUE_HEADER,
)
from scalepatterns.queue.message import ATTEMPT_HEADER, Message, decode, header_int
from scalepatterns.serializers import JsonSerializer, Serializer

__all__ = ["AsyncDeadLetters", "DeadLetters", "DeadMessage", "describe", "redriven"]

_ERROR_HEADERS = (ERROR_TYPE_HEADER, ERROR_MESSAGE_HEADER, FAILED_AT_HEADER, ORIGINAL_QUEUE_HEADER)


@dataclass(frozen=True, slots=True)
class DeadMessage:
    """A dead letter: the message and why it died."""

    id: str | None
    type: str | None
    body: Any
    error_type: str | None
    error_message: str | None
    attempts: int
    raw: bytes


def describe(delivery: Delivery, serializer: Serializer) -> DeadMessage:
    """What a dead letter says about itself (an undecodable one is shown raw)."""
    headers = dict(delivery.properties.headers or {})
    try:
        message: Message | None = decode(delivery.body, delivery.properties, serializer)
    except Exception:  # noqa: BLE001 - an undecodable dead letter is shown raw
        message = None
    return DeadMessage(
        id=delivery.properties.message_id,
        type=delivery.properties.type,
        body=message.body if message else delivery.body,
        error_type=_text(headers.get(ERROR_TYPE_HEADER)),
        error_message=_text(headers.get(ERROR_MESSAGE_HEADER)),
        attempts=header_int(headers.get(ATTEMPT_HEADER), 1),
        raw=delivery.body,
    )


def redriven(delivery: Delivery, queue: str) -> Outgoing:
    """A dead letter as a fresh first attempt on `queue`, without its error headers."""
    headers = {
        k: v for k, v in (delivery.properties.headers or {}).items() if k not in _ERROR_HEADERS
    }
    headers[ATTEMPT_HEADER] = 1
    return Outgoing(
        "", queue, delivery.body, dataclasses.replace(delivery.properties, headers=headers)
    )


def _give_back(deliveries: list[Delivery]) -> None:
    for delivery in reversed(deliveries):
        delivery.reject(requeue=True)


class _DeadLetterFlows:
    """What the dead-letter tools do, as flows (see `steps.py`) on a sync or async broker:
    `DeadLetters` runs them with plain calls, `AsyncDeadLetters` with awaits."""

    def __init__(self, broker: Any, queue: str, serializer: Serializer | None) -> None:
        self.broker = broker
        self.queue = queue
        self.name = dead_letter_queue(queue)
        self.serializer = serializer or JsonSerializer()

    def _publish(self, messages: list[Outgoing]) -> Any:
        return self.broker.publish(messages, timeout=30.0)  # an awaitable on an async broker

    def count(self) -> Flow[int]:
        count: int = yield self.broker.depth, (self.name,)
        return count

    def inspect(self, limit: int) -> Flow[list[DeadMessage]]:
        taken: list[Delivery] = []
        try:
            while len(taken) < limit:
                delivery = yield self.broker.get, (self.name,)
                if delivery is None:
                    break
                taken.append(delivery)
            return [describe(d, self.serializer) for d in taken]
        finally:
            _give_back(taken)

    def redrive(self, limit: int | None, where: Callable[[DeadMessage], bool] | None) -> Flow[int]:
        moved = 0
        keep: list[Delivery] = []  # given back unless moved: also when `where` or publishing fails
        try:
            while moved < (limit if limit is not None else _ALL):
                delivery = yield self.broker.get, (self.name,)
                if delivery is None:
                    break
                keep.append(delivery)
                if where is None or where(describe(delivery, self.serializer)):
                    yield self._publish, ([redriven(delivery, self.queue)],)
                    keep.pop().ack()
                    moved += 1
        finally:
            _give_back(keep)
        return moved

    def purge(self) -> Flow[int]:
        count = 0
        while (delivery := (yield self.broker.get, (self.name,))) is not None:
            delivery.ack()
            count += 1
        return count


class DeadLetters:
    """The dead-letter queue of `queue`: count, look, re-drive, purge.

    ```python
    from scalepatterns.queue import DeadLetters, MemoryBroker

    broker = MemoryBroker()
    dead = DeadLetters(broker, "jobs")
    assert dead.count() == 0 and dead.inspect() == []
    broker.close()
    ```
    """

    def __init__(self, broker: Broker, queue: str, *, serializer: Serializer | None = None) -> None:
        self._flows = _DeadLetterFlows(broker, queue, serializer)
        self.broker, self.queue, self.name = broker, queue, self._flows.name

    def count(self) -> int:
        return drive(self._flows.count())

    def inspect(self, limit: int = 100) -> list[DeadMessage]:
        """Look at up to `limit` dead letters without removing them."""
        return drive(self._flows.inspect(limit))

    def redrive(
        self,
        limit: int | None = None,
        *,
        where: Callable[[DeadMessage], bool] | None = None,
    ) -> int:
        """Move dead letters back to the work queue as fresh first attempts.

        Each one is published (confirmed) before it is removed, so a crash midway
        duplicates rather than loses. Returns how many were moved.
        """
        return drive(self._flows.redrive(limit, where))

    def purge(self) -> int:
        """Delete every dead letter; return how many."""
        return drive(self._flows.purge())


class AsyncDeadLetters:
    """`DeadLetters` on an `AsyncBroker`: the same methods, awaitable."""

    def __init__(
        self, broker: AsyncBroker, queue: str, *, serializer: Serializer | None = None
    ) -> None:
        self._flows = _DeadLetterFlows(broker, queue, serializer)
        self.broker, self.queue, self.name = broker, queue, self._flows.name

    async def count(self) -> int:
        return await adrive(self._flows.count())

    async def inspect(self, limit: int = 100) -> list[DeadMessage]:
        """Look at up to `limit` dead letters without removing them."""
        return await adrive(self._flows.inspect(limit))

    async def redrive(
        self,
        limit: int | None = None,
        *,
        where: Callable[[DeadMessage], bool] | None = None,
    ) -> int:
        """As `DeadLetters.redrive`: each published (confirmed) before it is removed."""
        return await adrive(self._flows.redrive(limit, where))

    async def purge(self) -> int:
        """Delete every dead letter; return how many."""
        return await adrive(self._flows.purge())


_ALL = 1_000_000_000


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)
