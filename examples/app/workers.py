"""The workers: the welcome email and the analytics subscriber, and a worker process.

`python -m examples.app worker` runs both groups until SIGTERM; any number of such
processes share the work (each group is one queue). In the async build the handlers are
`async def` and the workers are tasks on one event loop (`arun_worker`).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from examples.app.services import Services


def _welcome(message: Any) -> tuple[str, str, str]:
    """(to, subject, idempotency key) of a signup's welcome email.

    The idempotency key is the signup's, not the delivery's: a redelivery, a retry or a
    duplicate publish of this signup can never send a second email.
    """
    body = message.body
    return body["email"], "Welcome", f"welcome:{body['id']}"


def _event_name(message: Any) -> str:
    return str(message.type or message.routing_key)


def welcome_email_handler(services: Services) -> Callable[[Any], Any]:
    send = services.send_email  # the provider behind timeout, retry and breaker
    if services.settings.asynchronous:

        async def asend_welcome_email(message: Any) -> None:
            to, subject, key = _welcome(message)
            await send(to, subject, idempotency_key=key)

        return asend_welcome_email

    def send_welcome_email(message: Any) -> None:
        to, subject, key = _welcome(message)
        send(to, subject, idempotency_key=key)

    return send_welcome_email


def analytics_handler(services: Services) -> Callable[[Any], Any]:
    counts = f"{services.settings.prefix}:analytics"  # a Redis hash, on the real servers
    if services.settings.asynchronous:

        async def acount_event(message: Any) -> None:
            event = _event_name(message)
            if services.redis is not None:
                await services.redis.hincrby(counts, event, 1)
            services.analytics[event] += 1

        return acount_event

    def count_event(message: Any) -> None:
        event = _event_name(message)
        if services.redis is not None:
            services.redis.hincrby(counts, event, 1)
        services.analytics[event] += 1

    return count_event


def run_worker(services: Services) -> None:
    """Run the worker groups until SIGTERM or SIGINT."""
    if services.settings.asynchronous:
        asyncio.run(arun_worker(services))
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    services.start_workers()
    print("worker started", flush=True)
    try:
        stop.wait()
    finally:
        services.close()


async def arun_worker(services: Services) -> None:
    """The async build's worker process: both groups on this loop until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await services.astart_workers()
    print("worker started", flush=True)
    try:
        await stop.wait()
    finally:
        await services.aclose()
