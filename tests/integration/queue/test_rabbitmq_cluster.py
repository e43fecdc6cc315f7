"""The queue on a 3-node RabbitMQ cluster with quorum queues: the node holding a queue's
leader is SIGKILLed while publishing and while consuming, and nothing is lost."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from scalepatterns.events import EventRecorder, Listeners
from scalepatterns.queue import (
    AsyncProducer,
    AsyncRabbitMQBroker,
    AsyncWorker,
    MemoryDedupStore,
    Message,
    MessageDeadLettered,
    MessageRetried,
    Producer,
    QueueSpec,
    RabbitMQBroker,
    Reconnected,
    RetryPolicy,
    Worker,
)
from scalepatterns.queue.testing import Names, until, wait_until
from tests.support import services
from tests.support.rabbitmq_cluster import RabbitMQCluster

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

TOTAL = 10_000
BATCH = 500


@pytest.fixture(scope="module")
def rabbitmq_cluster() -> Iterator[RabbitMQCluster]:
    """Three clustered nodes for this module (started once: about 15 s)."""
    try:
        cluster = RabbitMQCluster().start()
    except (RuntimeError, OSError, TimeoutError) as exc:
        if services.services_required():
            pytest.fail(f"could not start a throw-away RabbitMQ cluster: {exc}", pytrace=False)
        pytest.skip(f"could not start a throw-away RabbitMQ cluster: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


def starting_at(cluster: RabbitMQCluster, node: int) -> list[str]:
    """Every node's URL, `node` first: the broker connects there and moves on when it dies."""
    return [cluster.url((node - 1 + i) % 3 + 1) for i in range(3)]


def heal(cluster: RabbitMQCluster) -> None:
    for node in (1, 2, 3):
        if not cluster.alive(node):
            cluster.restart(node)


def test_quorum_queue_survives_its_leaders_death_while_publishing_and_consuming(
    rabbitmq_cluster: RabbitMQCluster,
) -> None:
    """10,000 messages; a hundred fail once and wait 4 s in a (quorum) delay queue.

    1. Mid-publish, node 1 is killed: it holds the work queue's leader and the delay
       queue's (both declared through node 1). The producer and the worker move to the
       survivors; the retries waiting in the delay queue come back while node 1 is down.
    2. Node 1 rejoins; the last thousand messages are published and the worker holds
       them in flight when the node holding the work queue's new leader is killed.

    Every message is handled, each effect once (a dedup store absorbs redeliveries)."""
    cluster = rabbitmq_cluster
    names = Names()
    queue = names.queue()
    spec = QueueSpec(queue, queue_type="quorum")
    with RabbitMQBroker(cluster.url(1)) as admin:
        admin.declare_queue(spec)  # its leader is on node 1 (client-local placement)
    assert cluster.leader(queue) == 1
    effects: Counter[str] = Counter()
    failed_once: set[str] = set()
    gate = threading.Event()  # holds the last thousand messages in flight
    lock = threading.Lock()

    def handler(message: Message) -> None:
        n = int(message.body["key"][1:])
        if n >= held:
            gate.wait(60)
        with lock:
            if n % 100 == 0 and message.body["key"] not in failed_once:
                failed_once.add(message.body["key"])
                raise ConnectionError("a flaky dependency")  # back in 4 s, via a delay queue
            effects[message.body["key"]] += 1

    recorder = EventRecorder()
    listeners = Listeners()
    listeners.add(recorder)
    urls = starting_at(cluster, 1)
    producer_broker = RabbitMQBroker(urls, reconnect_max_delay=0.5, listeners=listeners)
    worker_broker = RabbitMQBroker(urls, reconnect_max_delay=0.5, listeners=listeners)
    worker = Worker(
        worker_broker,
        spec,
        handler,
        concurrency=4,
        prefetch=100,
        retry=RetryPolicy(attempts=3, wait=lambda attempt: 4.0),
        dedup=MemoryDedupStore(),
        in_progress_ttl=2.0,
        listeners=listeners,
    )
    producer = Producer(producer_broker, reconnect_timeout=120, declare=False)
    held = TOTAL - 1000  # the last thousand are published after node 1 rejoined
    try:
        worker.start()
        for start in range(0, held, BATCH):
            if start == 3 * BATCH:
                wait_until(lambda: len(recorder.of_type(MessageRetried)) >= 3, what="retries")
                with lock:
                    waiting = set(failed_once)  # in the delay queue, led by node 1
                assert cluster.leader(f"{queue}.delay.4000ms") == 1
                threading.Timer(0.01, cluster.kill, args=(1,)).start()  # mid-batch
            producer.publish_many(queue, [{"key": f"k{i}"} for i in range(start, start + BATCH)])
        try:
            wait_until(lambda: all(effects[key] for key in waiting), timeout=60)
        except pytest.fail.Exception:
            pytest.fail(
                f"the waiting retries {sorted(k for k in waiting if not effects[k])} did not "
                f"come back in 60 s; queues: {cluster.describe(queue)}"
            )
        assert not cluster.alive(1)  # they came back while node 1 was down
        cluster.restart(1)
        producer.publish_many(queue, [{"key": f"k{i}"} for i in range(held, TOTAL)])
        wait_until(lambda: worker.in_flight >= 4, what="handlers holding messages")
        leader = cluster.leader(queue)
        cluster.kill(leader)  # mid-consume: the worker holds a full prefetch
        gate.set()
        try:
            wait_until(lambda: len(effects) == TOTAL, timeout=180, what="all 10,000 effects")
        except pytest.fail.Exception:
            missing = [f"k{i}" for i in range(TOTAL) if not effects[f"k{i}"]]
            pytest.fail(
                f"{len(missing)} effects missing after 180 s (first {missing[:5]}); "
                f"dead-lettered {recorder.of_type(MessageDeadLettered)[:3]}, "
                f"queue depth {cluster.depth(queue)}, worker in flight {worker.in_flight}"
            )
        wait_until(lambda: cluster.depth(queue) == 0, timeout=60, what="an empty queue")
        time.sleep(1.0)  # any late redelivery arrives before counting
    finally:
        gate.set()
        worker.stop(timeout=10)
        producer_broker.close()
        worker_broker.close()
        heal(cluster)
    assert set(effects) == {f"k{i}" for i in range(TOTAL)}  # none lost
    assert max(effects.values()) == 1  # each effect once
    assert failed_once == {f"k{i}" for i in range(0, TOTAL, 100)}  # every retry came back
    assert len(recorder.of_type(Reconnected)) >= 2  # both brokers moved to a survivor
    assert cluster.depth(f"{queue}.dead") == 0


def test_async_producer_and_worker_survive_the_leaders_death(
    rabbitmq_cluster: RabbitMQCluster,
) -> None:
    """The async forms on the same cluster: 10,000 messages, the work queue's leader
    killed while they are published and consumed; none lost, each handled once."""
    cluster = rabbitmq_cluster
    names = Names()
    queue = names.queue()
    spec = QueueSpec(queue, queue_type="quorum")
    effects: Counter[str] = Counter()

    async def handler(message: Message) -> None:
        await asyncio.sleep(0)
        effects[message.body["key"]] += 1

    async def main() -> int:
        async with AsyncRabbitMQBroker(cluster.url(2)) as admin:
            await admin.declare_queue(spec)
        leader = cluster.leader(queue)
        urls = starting_at(cluster, leader)
        loop = asyncio.get_running_loop()
        async with (
            AsyncRabbitMQBroker(urls, reconnect_max_delay=0.5) as producer_broker,
            AsyncRabbitMQBroker(urls, reconnect_max_delay=0.5) as worker_broker,
        ):
            producer = AsyncProducer(producer_broker, reconnect_timeout=120, declare=False)
            worker = AsyncWorker(
                worker_broker, spec, handler, concurrency=8, dedup=MemoryDedupStore()
            )
            async with worker:
                for start in range(0, TOTAL, BATCH):
                    if start == 6 * BATCH:  # consuming is under way by now
                        await loop.run_in_executor(None, cluster.kill, leader)
                    batch = [{"key": f"k{i}"} for i in range(start, start + BATCH)]
                    await producer.publish_many(queue, batch)
                await until(lambda: len(effects) == TOTAL, timeout=180, what="all effects")
                await asyncio.sleep(1.0)
            return producer_broker.connections + worker_broker.connections

    try:
        connections = asyncio.run(main())
    finally:
        heal(cluster)
    assert set(effects) == {f"k{i}" for i in range(TOTAL)}  # none lost
    assert max(effects.values()) == 1
    assert connections >= 4  # each broker reconnected to a survivor
    assert cluster.depth(queue) == 0
