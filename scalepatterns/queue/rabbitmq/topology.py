"""Declarations, deletions and depth as operations on the link's loop.

Each function is an operation `fn(link, ..., ok, fail)` the brokers run with their own way
of waiting. Declarations use a short-lived channel, so a broker error (406
PRECONDITION_FAILED closes the channel) fails the declaration and leaves the rest alone.
"""

from __future__ import annotations

import time
from typing import Any

from scalepatterns.queue.broker import (
    QueueSpec,
    delay_queue,
    delay_queue_arguments,
    delay_tier_ms,
)
from scalepatterns.queue.errors import TopologyConflict
from scalepatterns.queue.rabbitmq.link import Fail, Link, NotFound, Ok

__all__ = [
    "bind",
    "declare_delay",
    "declare_exchange",
    "declare_queue",
    "delete_exchange",
    "delete_queue",
    "depth",
    "ensure_queue",
]


def declare_queue(link: Link, spec: QueueSpec, ok: Ok, fail: Fail) -> None:
    """The work queue, then its dead-letter queue, of the same type."""

    def steps(channel: Any, finish: Ok) -> None:
        channel.queue_declare(
            spec.name,
            durable=spec.durable,
            arguments=spec.arguments(),
            callback=lambda _f: channel.queue_declare(
                spec.dead_letter,
                durable=spec.durable,
                arguments={"x-queue-type": spec.queue_type},
                callback=lambda _f: finish(None),
            ),
        )

    def declared(_value: Any) -> None:
        link.known_queues[spec.name] = spec.queue_type
        ok(None)

    link.on_temp_channel(spec.name, steps, declared, fail)


def ensure_queue(link: Link, name: str, ok: Ok, fail: Fail) -> None:
    """Declare `QueueSpec(name)` unless a queue of that name exists already."""
    if name in link.known_queues:
        ok(None)
        return

    def missing(error: BaseException) -> None:
        if isinstance(error, NotFound):
            declare_queue(link, QueueSpec(name), ok, fail)
        else:
            fail(error)

    def exists(_value: Any) -> None:
        link.known_queues.setdefault(name, "classic")
        ok(None)

    link.on_temp_channel(
        name,
        lambda ch, fin: ch.queue_declare(name, passive=True, callback=lambda _f: fin(None)),
        exists,
        missing,
    )


def declare_delay(link: Link, queue: str, delay: float, ok: Ok, fail: Fail) -> None:
    """The delay queue of `queue` for `delay` seconds (rounded to its tier): `ok(name)`.

    It has the type of the work queue this broker declared (a quorum work queue gets
    quorum delay queues, so a waiting retry survives the loss of a node). When another
    process declared it with the other type, that one is used.
    """
    delay_ms = delay_tier_ms(delay)
    name = delay_queue(queue, delay_ms)
    queue_type = link.known_queues.get(queue, "classic")
    arguments = delay_queue_arguments(queue, delay_ms, queue_type)
    # RabbitMQ deletes a queue unused for `x-expires`, messages and all; publishing to it
    # does not count, redeclaring does: renew the lease at half its length.
    declared = link.delays.get(name)
    if declared is not None and time.monotonic() - declared < arguments["x-expires"] / 2000:
        ok(name)
        return

    def done(_value: Any) -> None:
        link.delays[name] = time.monotonic()
        ok(name)

    def conflict(error: BaseException) -> None:
        if not isinstance(error, TopologyConflict) or error.argument != "x-queue-type":
            fail(error)
            return
        other = "classic" if queue_type == "quorum" else "quorum"
        link.known_queues[queue] = other
        declare(delay_queue_arguments(queue, delay_ms, other), fail)

    def declare(arguments: dict[str, Any], on_error: Fail) -> None:
        link.on_temp_channel(
            name,
            lambda ch, fin: ch.queue_declare(
                name, durable=True, arguments=arguments, callback=lambda _f: fin(None)
            ),
            done,
            on_error,
        )

    declare(arguments, conflict)


def declare_exchange(link: Link, name: str, ok: Ok, fail: Fail) -> None:
    link.on_temp_channel(
        name,
        lambda ch, fin: ch.exchange_declare(
            name, exchange_type="topic", durable=True, callback=lambda _f: fin(None)
        ),
        ok,
        fail,
    )


def bind(  # noqa: PLR0917 - an operation: its arguments, then ok and fail, like the others
    link: Link, exchange: str, queue: str, pattern: str, ok: Ok, fail: Fail
) -> None:
    """Declare the durable topic `exchange`, then bind `queue` to it with `pattern`."""

    def steps(channel: Any, finish: Ok) -> None:
        channel.exchange_declare(
            exchange,
            exchange_type="topic",
            durable=True,
            callback=lambda _f: channel.queue_bind(
                queue, exchange, routing_key=pattern, callback=lambda _f: finish(None)
            ),
        )

    link.on_temp_channel(queue, steps, ok, fail)


def delete_queue(link: Link, name: str, ok: Ok, fail: Fail) -> None:
    link.known_queues.pop(name, None)
    link.delays.pop(name, None)
    link.on_temp_channel(
        name, lambda ch, fin: ch.queue_delete(name, callback=lambda _f: fin(None)), ok, fail
    )


def delete_exchange(link: Link, name: str, ok: Ok, fail: Fail) -> None:
    link.on_temp_channel(
        name, lambda ch, fin: ch.exchange_delete(name, callback=lambda _f: fin(None)), ok, fail
    )


def depth(link: Link, queue: str, ok: Ok, fail: Fail) -> None:
    """Messages ready in `queue` (0 if it does not exist)."""

    def missing(error: BaseException) -> None:
        if isinstance(error, NotFound):
            ok(0)
        else:
            fail(error)

    link.on_temp_channel(
        queue,
        lambda ch, fin: ch.queue_declare(
            queue, passive=True, callback=lambda f: fin(f.method.message_count)
        ),
        ok,
        missing,
    )
