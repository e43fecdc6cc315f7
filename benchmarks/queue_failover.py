"""Queue failover: from SIGKILLing the node that holds a quorum queue's leader to the first
publish confirmed and the first message handled again.

A throw-away 3-node RabbitMQ cluster (tests/support/rabbitmq_cluster.py). Each run: a
fresh quorum queue; a producer publishing one message every 10 ms (each confirmed) and a
worker consuming it, both connected to the leader's node with every node's URL; the
leader's node is killed; the times to the first confirm and the first handled message
after the kill are recorded; the node rejoins. Median of 5 runs; skipped under
``--quick`` (it starts its own cluster).
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid

from benchmarks.harness import Bench

TITLE = "queue failover: the leader's node of a quorum queue SIGKILLed"
RUNS = 5


def _one_run(cluster: object) -> tuple[float, float, int]:
    from scalepatterns.queue import Message, Producer, QueueSpec, RabbitMQBroker, Worker
    from tests.support.rabbitmq_cluster import RabbitMQCluster

    assert isinstance(cluster, RabbitMQCluster)
    queue = f"sp_bench_{uuid.uuid4().hex[:8]}"
    spec = QueueSpec(queue, queue_type="quorum")
    with RabbitMQBroker(cluster.url(1)) as admin:
        admin.declare_queue(spec)
    leader = cluster.leader(queue)
    urls = [cluster.url((leader - 1 + i) % 3 + 1) for i in range(3)]
    confirmed: list[float] = []
    handled: list[float] = []
    stop = threading.Event()

    def handler(_message: Message) -> None:
        handled.append(time.monotonic())

    def publish(producer: Producer) -> None:
        while not stop.is_set():
            try:
                producer.publish(queue, {"t": time.time()})
                confirmed.append(time.monotonic())
            except Exception:  # a failed publish is part of the gap the next one measures
                pass
            stop.wait(0.01)

    producer_broker = RabbitMQBroker(urls, reconnect_max_delay=0.2)
    worker_broker = RabbitMQBroker(urls, reconnect_max_delay=0.2)
    worker = Worker(worker_broker, spec, handler, concurrency=2)
    publisher = threading.Thread(
        target=publish, args=(Producer(producer_broker, reconnect_timeout=60, declare=False),)
    )
    try:
        worker.start()
        publisher.start()
        while len(handled) < 50:
            time.sleep(0.01)
        killed_at = time.monotonic()
        cluster.kill(leader)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            any(t > killed_at for t in confirmed) and any(t > killed_at for t in handled)
        ):
            time.sleep(0.005)
    finally:
        stop.set()
        publisher.join(30)
        worker.stop(timeout=5)
        producer_broker.close()
        worker_broker.close()
        cluster.restart(leader)
    first_confirm = min(t for t in confirmed if t > killed_at) - killed_at
    first_handled = min(t for t in handled if t > killed_at) - killed_at
    return first_confirm, first_handled, leader


def run(bench: Bench) -> None:
    if bench.quick:
        bench.record(TITLE, {"skipped": "under --quick (starts its own RabbitMQ cluster)"})
        return
    from tests.support.rabbitmq_cluster import RabbitMQCluster

    try:
        cluster = RabbitMQCluster().start()
    except (RuntimeError, OSError) as exc:
        bench.skip(f"could not start a RabbitMQ cluster: {exc}")
    try:
        runs = [_one_run(cluster) for _ in range(RUNS)]
    finally:
        cluster.stop()
    publish = [r[0] * 1000 for r in runs]
    consume = [r[1] * 1000 for r in runs]

    def spread(values: list[float]) -> str:
        return f"{min(values):.0f}..{max(values):.0f}"

    bench.record(
        TITLE,
        {
            "kill -> first publish confirmed, median (ms)": round(statistics.median(publish)),
            "kill -> first publish confirmed, min..max (ms)": spread(publish),
            "kill -> first message handled, median (ms)": round(statistics.median(consume)),
            "kill -> first message handled, min..max (ms)": spread(consume),
            "runs": len(runs),
        },
        note="Producer and worker connected to the killed node, with every node's URL: "
        "the gap holds their reconnection to a survivor and the queue's leader election.",
    )
