"""The workers: the welcome email and the analytics subscriber, and a worker process.

`python -m examples.app worker` runs both groups until SIGTERM; any number of such
processes share the work (each group is one queue).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from examples.app.services import Services


def welcome_email_handler(services: Services) -> Callable[[Any], None]:
    def send_welcome_email(message: Any) -> None:
        body = message.body
        # The idempotency key is the signup's, not the delivery's: a redelivery, a retry
        # or a duplicate publish of this signup can never send a second email.
        services.send_email(body["email"], "Welcome", idempotency_key=f"welcome:{body['id']}")

    return send_welcome_email


def analytics_handler(services: Services) -> Callable[[Any], None]:
    def count_event(message: Any) -> None:
        event = message.type or message.routing_key
        if services.redis is not None:
            services.redis.hincrby(f"{services.settings.prefix}:analytics", event, 1)
        services.analytics[event] += 1

    return count_event


def run_worker(services: Services) -> None:
    """Run the worker groups until SIGTERM or SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    services.subscribe_workers()
    services.bus.start()
    print("worker started", flush=True)
    try:
        stop.wait()
    finally:
        services.close()
