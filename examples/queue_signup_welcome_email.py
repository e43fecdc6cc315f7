"""Signup -> welcome email, with the signup event fanned out to several services.

The web handler stores the user and publishes one `user.signed_up` event, then answers at
once. The email service (group "welcome-email") and the analytics service (group
"analytics") each receive every signup once; two email workers share the work. A flaky
mail server is retried with backoff; a bad address ends in the dead-letter queue.

Run: ``python examples/queue_signup_welcome_email.py`` (in-memory broker), or with
``SCALEPATTERNS_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2F`` to use RabbitMQ.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import zlib

from scalepatterns.queue import (
    Broker,
    DeadLetters,
    EventBus,
    MemoryBroker,
    MemoryDedupStore,
    Message,
    RabbitMQBroker,
    Reject,
    RetryPolicy,
)

lock = threading.Lock()
emails_sent: list[str] = []
signups_counted = 0


def make_broker() -> Broker:
    url = os.environ.get("SCALEPATTERNS_AMQP_URL")
    return RabbitMQBroker(url) if url else MemoryBroker()


def send_welcome_email(message: Message) -> None:
    address = message.body["email"]
    if "@" not in address:
        raise Reject(f"cannot email {address!r}")  # poison: dead-letter, no retry
    if message.attempt <= 2 and zlib.crc32(address.encode()) % 10 < 3:
        # A flaky mail server: about 30% of the emails fail twice, then go through.
        raise ConnectionError("SMTP server busy")  # transient: retried with backoff
    with lock:
        emails_sent.append(address)


def count_signup(message: Message) -> None:
    global signups_counted
    with lock:
        signups_counted += 1


def signup_endpoint(bus: EventBus, email: str) -> dict[str, str]:
    """What the web handler does: store the user, publish the event, answer at once."""
    user_id = uuid.uuid4().hex[:8]
    bus.publish("user.signed_up", {"user_id": user_id, "email": email})
    return {"status": "created", "user_id": user_id}


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    broker = make_broker()
    exchange = f"signup-example-{uuid.uuid4().hex[:6]}"
    retry = RetryPolicy(attempts=5, wait=lambda attempt: 0.05 * 2**attempt)
    dedup = MemoryDedupStore()
    email_service = EventBus(broker, exchange=exchange, retry=retry, dedup=dedup)
    email_service_2 = EventBus(broker, exchange=exchange, retry=retry, dedup=dedup)
    analytics = EventBus(broker, exchange=exchange)
    email_service.subscribe("user.signed_up", send_welcome_email, group="welcome-email")
    email_service_2.subscribe("user.signed_up", send_welcome_email, group="welcome-email")
    analytics.subscribe("user.*", count_signup, group="analytics")

    api = EventBus(broker, exchange=exchange)
    with email_service, email_service_2, analytics:
        for n in range(20):
            signup_endpoint(api, f"user{n}@example.com")
        signup_endpoint(api, "not-an-address")
        dead = DeadLetters(broker, email_service.queue_of("welcome-email"))
        deadline = time.monotonic() + 30
        while (len(emails_sent) < 20 or dead.count() < 1) and time.monotonic() < deadline:
            time.sleep(0.05)
    print(f"welcome emails sent: {len(emails_sent)} of 20 valid signups")
    print(f"signups counted by analytics: {signups_counted}")
    for letter in dead.inspect():
        print(f"dead letter: {letter.body} ({letter.error_type}: {letter.error_message})")
    for group in ("welcome-email", "analytics"):
        queue = api.queue_of(group)
        for name in (queue, f"{queue}.dead"):
            broker.delete_queue(name)
    broker.delete_exchange(exchange)
    broker.close()


if __name__ == "__main__":
    main()
