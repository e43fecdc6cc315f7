"""A task message whose arguments cannot be applied is dead-lettered at once, not retried."""

from __future__ import annotations

import pytest

from scalepatterns.queue import DeadLetters, MemoryBroker, Producer, task, task_worker
from scalepatterns.queue.tasks import TaskRegistry
from scalepatterns.queue.testing import wait_until


@pytest.mark.parametrize(
    "body",
    [{"args": [], "kwargs": ["not", "a", "dict"]}, {"args": "1, 2", "kwargs": {}}],
    ids=["kwargs-list", "args-string"],
)
def test_malformed_task_arguments_are_rejected_once(body: dict[str, object]) -> None:
    broker = MemoryBroker()
    registry = TaskRegistry()
    runs: list[object] = []

    @task(broker, queue="jobs", registry=registry, name="reports.build")
    def build(*args: object, **kwargs: object) -> None:
        runs.append((args, kwargs))

    Producer(broker).publish("jobs", body, type="reports.build")
    with task_worker(broker, "jobs", registry=registry) as worker:
        wait_until(lambda: DeadLetters(broker, "jobs").count() == 1, timeout=10)
    dead = DeadLetters(broker, "jobs").inspect()
    assert dead[0].error_type == "Reject"
    assert dead[0].attempts == 1, "refused at once, never retried"
    assert runs == []
    assert worker.failed == 1
    broker.close()


def test_arguments_that_never_fit_the_task_are_rejected_once() -> None:
    broker = MemoryBroker()
    registry = TaskRegistry()
    runs: list[int] = []

    @task(broker, queue="jobs", registry=registry, name="reports.build")
    def build(report_id: int) -> None:
        runs.append(report_id)

    Producer(broker).publish("jobs", {"args": [1, 2], "kwargs": {}}, type="reports.build")
    with task_worker(broker, "jobs", registry=registry):
        wait_until(lambda: DeadLetters(broker, "jobs").count() == 1, timeout=10)
    [dead] = DeadLetters(broker, "jobs").inspect()
    assert dead.error_type == "Reject"
    assert "cannot take these arguments" in (dead.error_message or "")
    assert dead.attempts == 1  # a TypeError from the call was retried `attempts` times
    assert runs == []
    broker.close()


def test_a_dead_letter_with_a_foreign_attempt_header_can_be_inspected() -> None:
    from scalepatterns.queue import QueueSpec
    from scalepatterns.queue.broker import Outgoing, Properties
    from scalepatterns.queue.message import ATTEMPT_HEADER

    broker = MemoryBroker()
    broker.declare_queue(QueueSpec("jobs"))
    dead = DeadLetters(broker, "jobs")
    headers = {ATTEMPT_HEADER: "abc"}  # written by another client
    broker.publish([Outgoing("", dead.name, b"{}", Properties("m1", headers=headers))])
    [letter] = dead.inspect()
    assert letter.attempts == 1
    broker.close()
