"""Inspect and re-drive a queue's dead letters."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scalepatterns.queue.broker import Broker, Delivery, Outgoing, dead_letter_queue
from scalepatterns.queue.message import ATTEMPT_HEADER, Message, decode, header_int
from scalepatterns.queue.worker import (
    ERROR_MESSAGE_HEADER,
    ERROR_TYPE_HEADER,
    FAILED_AT_HEADER,
    ORIGINAL_QUEUE_HEADER,
)
from scalepatterns.serializers import JsonSerializer, Serializer

__all__ = ["DeadLetters", "DeadMessage"]

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
        self.broker = broker
        self.queue = queue
        self.name = dead_letter_queue(queue)
        self._serializer = serializer or JsonSerializer()

    def count(self) -> int:
        return self.broker.depth(self.name)

    def _take(self, limit: int) -> list[Delivery]:
        taken: list[Delivery] = []
        while len(taken) < limit:
            delivery = self.broker.get(self.name)
            if delivery is None:
                break
            taken.append(delivery)
        return taken

    def _describe(self, delivery: Delivery) -> DeadMessage:
        headers = dict(delivery.properties.headers or {})
        try:
            message: Message | None = decode(delivery.body, delivery.properties, self._serializer)
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

    def inspect(self, limit: int = 100) -> list[DeadMessage]:
        """Look at up to `limit` dead letters without removing them."""
        taken = self._take(limit)
        try:
            return [self._describe(d) for d in taken]
        finally:
            for delivery in reversed(taken):
                delivery.reject(requeue=True)

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
        moved = 0
        keep: list[Delivery] = []
        remaining = limit if limit is not None else 1_000_000_000
        try:
            while moved < remaining:
                delivery = self.broker.get(self.name)
                if delivery is None:
                    break
                # Kept (given back) unless moved: also when `where` or publishing fails.
                keep.append(delivery)
                if where is not None and not where(self._describe(delivery)):
                    continue
                headers = {
                    k: v
                    for k, v in (delivery.properties.headers or {}).items()
                    if k not in _ERROR_HEADERS
                }
                headers[ATTEMPT_HEADER] = 1
                props = dataclasses.replace(delivery.properties, headers=headers)
                self.broker.publish([Outgoing("", self.queue, delivery.body, props)], timeout=30.0)
                keep.pop()
                delivery.ack()
                moved += 1
        finally:
            for delivery in reversed(keep):
                delivery.reject(requeue=True)
        return moved

    def purge(self) -> int:
        """Delete every dead letter; return how many."""
        count = 0
        while (delivery := self.broker.get(self.name)) is not None:
            delivery.ack()
            count += 1
        return count


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)
