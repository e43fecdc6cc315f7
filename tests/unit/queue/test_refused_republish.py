"""A retry or dead-letter publish the broker refuses gives the message back, not a stuck slot."""

from __future__ import annotations

from collections.abc import Sequence

from scalepatterns.queue import MemoryBroker, Producer, PublishError, RetryPolicy, Worker
from scalepatterns.queue.broker import Outgoing
from scalepatterns.queue.testing import wait_until


class RefusesFirstDelayPublish(MemoryBroker):
    """The broker refuses the first publish to a delay queue (as for a vanished queue)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    def publish(self, messages: Sequence[Outgoing], *, timeout: float = 30.0) -> None:
        target = messages[0].routing_key
        if ".delay." in target and self.refused == 0:
            self.refused += 1
            raise PublishError(target, {"m": "unroutable"})
        super().publish(messages, timeout=timeout)


def test_a_refused_retry_publish_returns_the_message_to_the_queue() -> None:
    broker = RefusesFirstDelayPublish()
    calls: list[int] = []

    def handler(message: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("flaky dependency")

    worker = Worker(
        broker, "jobs", handler, retry=RetryPolicy(max_attempts=5, wait=lambda attempt: 0.01)
    )
    with worker:
        Producer(broker).publish("jobs", {"n": 1})
        wait_until(lambda: worker.handled == 1, timeout=15)
    assert broker.refused == 1
    assert len(calls) == 2, "the message came back after the refused retry publish"
    assert broker.depth("jobs") == 0
    assert broker.unacked("jobs") == 0
    broker.close()
