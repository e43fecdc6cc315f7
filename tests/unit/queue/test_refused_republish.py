"""A retry or dead-letter publish the broker refuses gives the message back, not a stuck slot."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

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
        broker, "jobs", handler, retry=RetryPolicy(attempts=5, wait=lambda attempt: 0.01)
    )
    with worker:
        Producer(broker).publish("jobs", {"n": 1})
        wait_until(lambda: worker.handled == 1, timeout=15)
    assert broker.refused == 1
    assert len(calls) == 2, "the message came back after the refused retry publish"
    assert broker.depth("jobs") == 0
    assert broker.unacked("jobs") == 0
    broker.close()


def test_a_retry_policy_that_raises_dead_letters_instead_of_looping(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from scalepatterns.queue import DeadLetters

    class Broken(RetryPolicy):
        def decide(self, attempt: int, error: BaseException) -> object:  # type: ignore[override]
            raise RuntimeError("policy bug")

    broker = MemoryBroker()
    calls: list[int] = []

    def handler(message: object) -> None:
        calls.append(1)
        raise ConnectionError("flaky dependency")

    worker = Worker(broker, "jobs", handler, retry=Broken())
    with worker:
        Producer(broker).publish("jobs", {"n": 1})
        wait_until(lambda: DeadLetters(broker, "jobs").count() == 1, timeout=15)
    assert len(calls) == 1  # handled once, then parked: not requeued every second
    [letter] = DeadLetters(broker, "jobs").inspect()
    assert letter.error_type == "ConnectionError"  # the handler's error, kept for redrive
    assert "the retry policy failed: RuntimeError('policy bug')" in caplog.text
    broker.close()


def test_stop_after_a_timeout_leaves_in_flight_right_for_the_next_run() -> None:
    """Deliveries still queued in the pool when stop() timed out were cancelled without
    counting themselves out, so in_flight stayed above 0 and every later stop() waited
    its whole timeout and reported failure."""
    import threading

    broker = MemoryBroker()
    release = threading.Event()

    def slow(message: object) -> None:
        release.wait(10)

    worker = Worker(broker, "jobs", slow, concurrency=1, prefetch=5)
    worker.start()
    Producer(broker).publish_many("jobs", range(4))
    wait_until(lambda: worker.in_flight == 4)  # one running, three queued in the pool
    assert worker.stop(timeout=0.05) is False
    release.set()
    wait_until(lambda: worker.in_flight == 0)
    worker.start()  # the unsettled messages came back to the queue and are handled now
    wait_until(lambda: broker.depth("jobs") == 0 and broker.unacked("jobs") == 0)
    assert worker.stop(timeout=5) is True  # nothing phantom left to wait for
    assert worker.in_flight == 0
    broker.close()


def test_a_worker_restarted_at_once_after_a_timed_out_stop_handles_each_message_once() -> None:
    """The old run's queued deliveries must not run once the new run has started: the
    broker redelivers them to the new run as well."""
    import threading
    from collections import Counter

    broker = MemoryBroker()
    release = threading.Event()
    handled: Counter[int] = Counter()
    lock = threading.Lock()

    def handler(message: object) -> None:
        n = message.body  # type: ignore[attr-defined]
        if n == 0:
            release.wait(10)
        with lock:
            handled[n] += 1

    worker = Worker(broker, "jobs", handler, concurrency=1, prefetch=5)
    worker.start()
    Producer(broker).publish_many("jobs", range(4))
    wait_until(lambda: worker.in_flight == 4)
    assert worker.stop(timeout=0.05) is False
    worker.start()  # at once: the old pool still holds three queued deliveries
    release.set()
    wait_until(lambda: broker.depth("jobs") == 0 and broker.unacked("jobs") == 0)
    worker.stop(timeout=5)
    assert handled[1] == handled[2] == handled[3] == 1
    broker.close()


class NacksFirstPublishes(MemoryBroker):
    """The broker nacks the first `times` publishes (a quorum queue electing a leader)."""

    def __init__(self, times: int, *, unroutable: bool = False) -> None:
        super().__init__()
        self.times = times
        self.unroutable = unroutable
        self.calls = 0

    def publish(self, messages: Sequence[Outgoing], *, timeout: float = 30.0) -> None:
        self.calls += 1
        if self.calls <= self.times:
            ids = [m.properties.message_id or "" for m in messages]
            failed = dict.fromkeys(ids, "nacked by the broker")
            if self.unroutable:
                failed[ids[0]] = "unroutable (312 NO_ROUTE)"
                raise PublishError(messages[0].routing_key, failed, ids[1:])
            raise PublishError(messages[0].routing_key, failed, ids)
        super().publish(messages, timeout=timeout)


def test_nacked_messages_are_published_again_until_the_broker_takes_them() -> None:
    broker = NacksFirstPublishes(times=2)
    ids = Producer(broker, reconnect_timeout=30).publish_many("jobs", [1, 2, 3])
    assert broker.calls == 3
    assert broker.depth("jobs") == 3
    assert len(set(ids)) == 3
    broker.close()


def test_a_refusal_that_is_not_a_nack_is_raised_at_once() -> None:
    broker = NacksFirstPublishes(times=5, unroutable=True)
    with pytest.raises(PublishError) as caught:
        Producer(broker, reconnect_timeout=30).publish_many("jobs", [1, 2, 3])
    assert broker.calls == 1  # not published again: an unroutable message stays unroutable
    assert len(caught.value.nacked) == 2
    broker.close()


def test_nacks_past_the_reconnect_timeout_are_raised() -> None:
    broker = NacksFirstPublishes(times=1000)
    with pytest.raises(PublishError) as caught:
        Producer(broker, reconnect_timeout=0).publish("jobs", 1)
    assert caught.value.nacked == list(caught.value.failed)
    broker.close()
