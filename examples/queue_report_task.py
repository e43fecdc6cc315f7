"""The report task: the API answers at once, a worker builds the report in the background.

`@task` turns `build_report` into something the API can `.delay()`; a worker runs
registered tasks by name, retrying transient failures with backoff.

Run: ``python examples/queue_report_task.py`` (in-memory broker), or with
``SCALEPATTERNS_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2F`` to use RabbitMQ.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid

from scalepatterns.queue import (
    Broker,
    MemoryBroker,
    RabbitMQBroker,
    RetryPolicy,
    TaskRegistry,
    task,
    task_worker,
)

broker: Broker = (
    RabbitMQBroker(os.environ["SCALEPATTERNS_AMQP_URL"])
    if os.environ.get("SCALEPATTERNS_AMQP_URL")
    else MemoryBroker()
)
QUEUE = f"reports-example-{uuid.uuid4().hex[:6]}"
registry = TaskRegistry()
reports: dict[str, str] = {}
done = threading.Event()


@task(broker, queue=QUEUE, registry=registry, name="reports.build")
def build_report(report_id: str, user_id: int, fmt: str = "pdf") -> None:
    time.sleep(0.2)  # the heavy lifting
    reports[report_id] = f"report for user {user_id} as {fmt}"
    if len(reports) == 3:
        done.set()


def report_endpoint(user_id: int, fmt: str = "pdf") -> dict[str, str]:
    """What the web handler does: queue the work and answer 202 at once."""
    report_id = uuid.uuid4().hex[:8]
    build_report.delay(report_id, user_id, fmt=fmt)
    return {"status": "accepted", "report_id": report_id}


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    started = time.perf_counter()
    answers = [report_endpoint(1), report_endpoint(2, fmt="csv")]
    build_report.apply_async([uuid.uuid4().hex[:8], 3], delay=0.5)  # run in half a second
    print(f"API answered {len(answers)} requests in {time.perf_counter() - started:.3f}s")
    worker = task_worker(
        broker, QUEUE, registry=registry, concurrency=2, retry=RetryPolicy(attempts=3)
    )
    with worker:
        done.wait(30)
    for report_id, text in sorted(reports.items()):
        print(f"{report_id}: {text}")
    print(f"all reports built {time.perf_counter() - started:.2f}s after the first request")
    for name in (QUEUE, f"{QUEUE}.dead", f"{QUEUE}.delay.500ms"):
        broker.delete_queue(name)
    broker.close()


if __name__ == "__main__":
    main()
