"""What a worker does with one delivery, decided once for `Worker` and `AsyncWorker`.

`handle(delivery, settings, io)` is a flow (see `steps.py`): it yields each piece of I/O
it needs as ``(function, arguments)`` taken from `io` (claim a dedup mark, call the
handler, declare a delay queue, publish a retry...) and receives its result, or has its
exception thrown in. It does no I/O itself; the sync worker drives it with plain calls,
the async worker awaits each step. The order of those steps is the delivery guarantee:

1. decode the message (undecodable: dead-letter at once);
2. claim the dedup mark (done already: ack unseen; busy: come back later);
3. call the handler; if it raised, retry through a delay queue or dead-letter, by the
   retry policy;
4. mark the id done, then ack.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol

from scalepatterns._checks import seconds
from scalepatterns._steps import Step
from scalepatterns.clock import Clock
from scalepatterns.errors import ConfigurationError, SerializationError
from scalepatterns.events import Listeners
from scalepatterns.queue.broker import Delivery, Outgoing, QueueSpec
from scalepatterns.queue.dedup import Claim
from scalepatterns.queue.events import (
    MessageDeadLettered,
    MessageDuplicate,
    MessageHandled,
    MessageRetried,
)
from scalepatterns.queue.message import ATTEMPT_HEADER, Message, decode, new_id
from scalepatterns.queue.retry import DeadLetter, Retry, RetryPolicy
from scalepatterns.serializers import Serializer

__all__ = [
    "ERROR_MESSAGE_HEADER",
    "ERROR_TYPE_HEADER",
    "FAILED_AT_HEADER",
    "Handler",
    "HandlingIO",
    "ORIGINAL_QUEUE_HEADER",
    "Step",
    "WorkerSettings",
    "handle",
]

_log = logging.getLogger("scalepatterns.queue")

Handler = Callable[[Message], Any]
"""A handler takes a `Message`; it may be an ``async def``."""

ERROR_TYPE_HEADER = "x-sp-error-type"
ERROR_MESSAGE_HEADER = "x-sp-error-message"
FAILED_AT_HEADER = "x-sp-failed-at"
ORIGINAL_QUEUE_HEADER = "x-sp-original-queue"


class HandlingIO(Protocol):
    """The I/O the handling of a delivery needs. Each method may return its result or an
    awaitable of it (the async worker's)."""

    def claim(self, mark: str, ttl: float) -> Claim | Awaitable[Claim]: ...

    def complete(self, mark: str, ttl: float) -> Any: ...

    def release(self, mark: str) -> Any: ...

    def call(self, message: Message) -> Any: ...

    def declare_delay(self, delay: float) -> str | Awaitable[str]: ...

    def publish(self, message: Outgoing) -> Any: ...


@dataclass(frozen=True)
class WorkerSettings:
    """A worker's options, checked once (see `Worker` for their meaning)."""

    spec: QueueSpec
    concurrency: int
    prefetch: int
    retry: RetryPolicy
    deduplicate: bool
    dedup_ttl: float
    in_progress_ttl: float
    shutdown_timeout: float
    serializer: Serializer
    clock: Clock
    listeners: Listeners

    @classmethod
    def check(  # noqa: PLR0917 - the worker's own arguments, passed through
        cls,
        queue: str | QueueSpec,
        handler: object,
        concurrency: int,
        prefetch: int | None,
        retry: RetryPolicy | None,
        deduplicate: bool,
        dedup_ttl: float,
        in_progress_ttl: float,
        shutdown_timeout: float,
        serializer: Serializer,
        clock: Clock,
        listeners: Listeners,
    ) -> WorkerSettings:
        if not callable(handler):
            raise TypeError(f"handler must be a callable taking a Message, not {handler!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError("concurrency", concurrency, "an int >= 1")
        if prefetch is not None and (
            isinstance(prefetch, bool)
            or not isinstance(prefetch, int)
            or not 1 <= prefetch <= 65535
        ):  # AMQP's prefetch-count is 16 bits
            raise ConfigurationError("prefetch", prefetch, "an int in 1..65535, or None")
        seconds("dedup_ttl", dedup_ttl, positive=True)
        seconds("in_progress_ttl", in_progress_ttl, positive=True)
        seconds("shutdown_timeout", shutdown_timeout)
        return cls(
            spec=queue if isinstance(queue, QueueSpec) else QueueSpec(queue),
            concurrency=concurrency,
            prefetch=prefetch or min(65535, 2 * concurrency),
            retry=retry or RetryPolicy(),
            deduplicate=deduplicate,
            dedup_ttl=dedup_ttl,
            in_progress_ttl=in_progress_ttl,
            shutdown_timeout=shutdown_timeout,
            serializer=serializer,
            clock=clock,
            listeners=listeners,
        )


def handle(
    delivery: Delivery, settings: WorkerSettings, io: HandlingIO
) -> Generator[Step, Any, bool | None]:
    """Handle one delivery; returns True if the handler succeeded, False if it raised
    (retried or dead-lettered), None if it was not called (duplicate, busy, undecodable).

    Errors of the broker's publishes and acks propagate: the worker gives the delivery
    back to the queue.
    """
    queue = settings.spec.name
    try:
        message = decode(
            delivery.body,
            delivery.properties,
            settings.serializer,
            routing_key=delivery.routing_key,
            redelivered=delivery.redelivered,
        )
    except SerializationError as exc:
        yield from _dead_letter(delivery, settings, io, None, 1, exc)
        return None
    deduplicate = settings.deduplicate and message.has_id
    # Marks are per queue: the same event fanned out to two queues is handled by both.
    mark = f"{queue}:{message.id}"
    if deduplicate:
        try:
            claim = yield io.claim, (mark, settings.in_progress_ttl)
        except Exception as exc:  # noqa: BLE001 - any dedup-store failure: try the message again later
            _log.warning("dedup store failed on %s (%s); retrying later", queue, exc)
            yield from _requeue_later(delivery, io, 1.0, message.attempt)
            return None
        if claim is Claim.DONE:
            delivery.ack()
            if settings.listeners.active:
                settings.listeners.emit(MessageDuplicate(source=queue))
            return None
        if claim is Claim.BUSY:
            # Another worker holds it, or died holding it: look again later.
            delay = min(settings.in_progress_ttl, 5.0)
            yield from _requeue_later(delivery, io, delay, message.attempt)
            return None
    started = settings.clock.monotonic()
    try:
        yield io.call, (message,)
    except Exception as exc:  # noqa: BLE001 - any handler error is retried or dead-lettered by policy
        if deduplicate:
            with contextlib.suppress(Exception):
                yield io.release, (mark,)
        yield from _after_failure(delivery, settings, io, message, exc)
        return False
    if deduplicate:
        try:
            yield io.complete, (mark, settings.dedup_ttl)
        except Exception as exc:  # noqa: BLE001 - the effect happened: ack it regardless
            _log.warning("dedup store could not mark %s done: %s", message.id, exc)
    delivery.ack()
    if settings.listeners.active:
        settings.listeners.emit(
            MessageHandled(
                source=queue,
                attempt=message.attempt,
                seconds=settings.clock.monotonic() - started,
            )
        )
    return True


def _after_failure(
    delivery: Delivery,
    settings: WorkerSettings,
    io: HandlingIO,
    message: Message,
    error: Exception,
) -> Generator[Step, Any, None]:
    try:
        decision = settings.retry.decide(message.attempt, error)
    except Exception as policy_error:  # noqa: BLE001 - a broken policy dead-letters, never loops
        decision = DeadLetter(f"the retry policy failed: {policy_error!r}")
    if isinstance(decision, Retry):
        yield from _requeue_later(delivery, io, decision.delay, message.attempt + 1)
        if settings.listeners.active:
            settings.listeners.emit(
                MessageRetried(
                    source=settings.spec.name,
                    attempt=message.attempt + 1,
                    delay=decision.delay,
                    error=type(error).__name__,
                )
            )
        return
    yield from _dead_letter(delivery, settings, io, message, message.attempt, error, decision)


def _copy(delivery: Delivery, target: str, headers: dict[str, Any]) -> Outgoing:
    props = delivery.properties
    merged = dict(props.headers or {})
    merged.update(headers)
    return Outgoing(
        "",
        target,
        delivery.body,
        dataclasses.replace(props, headers=merged, message_id=props.message_id or new_id()),
    )


def _requeue_later(
    delivery: Delivery, io: HandlingIO, delay: float, attempt: int
) -> Generator[Step, Any, None]:
    """Publish a copy to the delay queue (confirmed), then ack the original."""
    target = yield io.declare_delay, (delay,)
    yield io.publish, (_copy(delivery, target, {ATTEMPT_HEADER: attempt}),)
    delivery.ack()


def _dead_letter(  # noqa: PLR0917 - the failure's facts, passed on from `handle`
    delivery: Delivery,
    settings: WorkerSettings,
    io: HandlingIO,
    message: Message | None,
    attempt: int,
    error: BaseException,
    decision: DeadLetter | None = None,
) -> Generator[Step, Any, None]:
    queue = settings.spec.name
    headers = {
        ERROR_TYPE_HEADER: type(error).__name__,
        ERROR_MESSAGE_HEADER: str(error)[:1000],
        ATTEMPT_HEADER: attempt,
        FAILED_AT_HEADER: int(settings.clock.time() * 1000),
        ORIGINAL_QUEUE_HEADER: queue,
    }
    yield io.publish, (_copy(delivery, settings.spec.dead_letter, headers),)
    delivery.ack()
    # The reason, then the error itself: "rejected by the handler (Reject: bad address)".
    _log.warning(
        "message %s on %s dead-lettered after %d attempt(s): %s (%s: %s)",
        message.id if message else delivery.properties.message_id,
        queue,
        attempt,
        decision.reason if decision else "it cannot be decoded",
        type(error).__name__,
        error,
    )
    if settings.listeners.active:
        settings.listeners.emit(
            MessageDeadLettered(source=queue, attempt=attempt, error=type(error).__name__)
        )
