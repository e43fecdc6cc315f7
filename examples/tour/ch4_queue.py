"""Chapter 4: a queue that loses nothing: acks, retries with backoff, dead letters, fan-out."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from scalepatterns.queue import (
    DeadLetters,
    EventBus,
    MemoryBroker,
    MemoryDedupStore,
    Message,
    Producer,
    RetryPolicy,
    TaskRegistry,
    Worker,
    task,
    task_worker,
)

TITLE = "Queue: publish, work, retry, dead-letter, fan out (in-memory broker)"


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def run() -> None:
    logging.getLogger("scalepatterns.queue").setLevel(logging.ERROR)  # the tour prints instead
    broker = MemoryBroker()  # same semantics as RabbitMQBroker(url), in-process
    work_with_retries(broker)
    tasks(broker)
    events(broker)
    broker.close()


def work_with_retries(broker: MemoryBroker) -> None:
    producer = Producer(broker)

    # A worker with retries: every third email fails once (a flaky SMTP server).
    sent: list[Message] = []
    tries: dict[str, int] = {}
    lock = threading.Lock()

    def send_email(message: Message) -> None:
        to = message.body["to"]
        with lock:
            tries[to] = tries.get(to, 0) + 1
            if message.body.get("poison"):
                raise ValueError("malformed address")
            if message.body["n"] % 3 == 0 and message.attempt == 1:
                raise ConnectionError("SMTP server busy")
            sent.append(message)

    policy = RetryPolicy(attempts=3, wait=lambda attempt: 0.05 * 2**attempt)
    with Worker(broker, "emails", send_email, retry=policy, dedup=MemoryDedupStore()):
        producer.publish_many("emails", [{"to": f"user{n}@example.com", "n": n} for n in range(9)])
        producer.publish("emails", {"to": "user1@example.com", "n": 1}, message_id="dup")
        producer.publish("emails", {"to": "user1@example.com", "n": 1}, message_id="dup")
        producer.publish("emails", {"to": "@@", "n": 1, "poison": True})
        dead = DeadLetters(broker, "emails")
        wait_for(lambda: len(sent) == 10 and dead.count() == 1)
    retried = sum(1 for message in sent if message.attempt > 1)
    print(f"   worker: {len(sent)} emails sent; {retried} needed a retry (backoff 100 ms)")
    print("   dedup: a message published twice with one id was handled once")
    [letter] = dead.inspect()
    print(
        f"   dead letters: {dead.count()} poison message after {letter.attempts} attempts "
        f"({letter.error_type}: {letter.error_message})"
    )


def tasks(broker: MemoryBroker) -> None:
    """Tasks: the API answers at once; a worker builds the report later."""
    registry = TaskRegistry()
    built: list[int] = []

    @task(broker, queue="reports", registry=registry)
    def build_report(user_id: int) -> None:
        built.append(user_id)

    build_report.delay(42)
    build_report.apply_async([7], delay=0.05)
    with task_worker(broker, "reports", registry=registry):
        wait_for(lambda: len(built) == 2)
    print(f"   tasks: build_report ran for users {sorted(built)} (one delayed 50 ms)")


def events(broker: MemoryBroker) -> None:
    """Events: one signup, every group gets it once."""
    lock = threading.Lock()
    bus = EventBus(broker)
    got: dict[str, int] = {"welcome-email": 0, "analytics": 0}

    def counter(group: str) -> Callable[[Message], None]:
        def handle(_message: Message) -> None:
            with lock:
                got[group] += 1

        return handle

    bus.subscribe("user.signed_up", counter("welcome-email"), group="welcome-email")
    bus.subscribe("user.*", counter("analytics"), group="analytics")
    with bus:
        bus.publish("user.signed_up", {"user": 1})
        bus.publish("user.deleted", {"user": 2})
        wait_for(lambda: got["welcome-email"] == 1 and got["analytics"] == 2)
    print(f"   events: 2 published -> {got} (each group its own queue)")
