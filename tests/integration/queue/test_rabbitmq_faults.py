"""Fault tests on RabbitMQ: connections cut mid-run, a worker process killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from scalepatterns.events import EventRecorder, Listeners
from scalepatterns.queue import (
    MemoryDedupStore,
    Message,
    MessageDuplicate,
    Producer,
    RabbitMQBroker,
    Reconnected,
    RetryPolicy,
    Worker,
)
from scalepatterns.queue.testing import Names, wait_until
from tests.support.servers import TcpProxy

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]


def proxied(amqp_url: str, proxy: TcpProxy) -> str:
    return amqp_url.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with TcpProxy(5672) as proxy:
        yield proxy


def test_10k_messages_with_connection_cuts_lose_nothing(
    amqp_url: str, proxy: TcpProxy, admin: RabbitMQBroker, names: Names
) -> None:
    queue = names.queue()
    total = 10_000
    effects: Counter[str] = Counter()
    lock = threading.Lock()

    def handler(message: Message) -> None:
        with lock:
            effects[message.body["key"]] += 1

    recorder = EventRecorder()
    listeners = Listeners()
    listeners.add(recorder)
    url = proxied(amqp_url, proxy)
    producer_broker = RabbitMQBroker(url, reconnect_max_delay=0.5, listeners=listeners)
    worker_broker = RabbitMQBroker(url, reconnect_max_delay=0.5, listeners=listeners)
    worker = Worker(
        worker_broker,
        queue,
        handler,
        concurrency=4,
        prefetch=200,
        dedup=MemoryDedupStore(),
        in_progress_ttl=1.0,
        listeners=listeners,
    )
    producer = Producer(producer_broker, reconnect_timeout=60, listeners=listeners)
    try:
        worker.start()
        batches = [[{"key": f"k{i}"} for i in range(s, s + 500)] for s in range(0, total, 500)]
        cuts_at = {4, 9, 14}
        for index, batch in enumerate(batches):
            if index in cuts_at:
                proxy.cut()  # both connections drop mid-run
            producer.publish_many(queue, batch)
            if index == 17:
                time.sleep(0.3)
                proxy.cut()  # and once more while the worker is busy
        wait_until(lambda: len(effects) == total, timeout=120, what="all 10,000 effects")
        wait_until(lambda: admin.depth(queue) == 0, timeout=30, what="an empty queue")
        time.sleep(0.5)  # let any late duplicate arrive before counting
    finally:
        worker.stop(timeout=10)
        producer_broker.close()
        worker_broker.close()
    assert proxy.cuts == 4
    assert set(effects) == {f"k{i}" for i in range(total)}  # none lost
    assert max(effects.values()) == 1  # each effect exactly once
    assert len(recorder.of_type(Reconnected)) >= 4  # both brokers reconnected after cuts
    duplicates = len(recorder.of_type(MessageDuplicate))
    print(f"cuts={proxy.cuts} duplicates absorbed={duplicates}")
    assert admin.depth(f"{queue}.dead") == 0


WORKER_SCRIPT = """
import sys, time, redis
from scalepatterns.queue import RabbitMQBroker, RedisDedupStore, Worker

url, queue, redis_url, prefix = sys.argv[1:5]
client = redis.Redis.from_url(redis_url)
store = RedisDedupStore(client, prefix=prefix + ":dedup:")

def handler(message):
    time.sleep(0.001)
    # The effect and the 'done' mark in one transaction: a kill either does both or neither.
    pipe = client.pipeline(transaction=True)
    pipe.rpush(prefix + ":effects", message.body["key"])
    pipe.set(store.key(queue, message.id), b"done", px=3_600_000)
    pipe.execute()

broker = RabbitMQBroker(url, reconnect_max_delay=0.5)
Worker(broker, queue, handler, concurrency=4, prefetch=50, dedup=store,
       in_progress_ttl=1.0).run()
broker.close()
"""


def test_worker_killed_with_sigkill_loses_nothing(
    amqp_url: str,
    redis_url: str,
    proxy: TcpProxy,
    admin: RabbitMQBroker,
    names: Names,
    tmp_path: Path,
) -> None:
    import redis

    queue = names.queue()
    prefix = names.prefix
    client = redis.Redis.from_url(redis_url)
    total = 10_000
    url = proxied(amqp_url, proxy)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    spawned = 0

    def spawn() -> subprocess.Popen[bytes]:
        nonlocal spawned
        spawned += 1
        with open(tmp_path / f"worker{spawned}.log", "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-c", WORKER_SCRIPT, url, queue, redis_url, prefix],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def effects() -> int:
        return int(client.llen(prefix + ":effects"))

    admin.declare_queue(Worker(admin, queue, print).spec)
    producer = Producer(admin)
    producer.publish_many(queue, [{"key": f"k{i}"} for i in range(total)])
    workers = [spawn(), spawn()]
    kills = 0
    try:
        for threshold in (2000, 5000, 8000):
            wait_until(lambda t=threshold: effects() >= t, timeout=60, what=f"{threshold} effects")
            workers[0].send_signal(signal.SIGKILL)  # mid-handler, unacked messages in flight
            workers[0].wait(timeout=10)
            kills += 1
            workers[0] = spawn()
            if threshold == 5000:
                proxy.cut()
        wait_until(lambda: effects() >= total, timeout=120, what="all effects")
        wait_until(lambda: admin.depth(queue) == 0, timeout=30, what="an empty queue")
        time.sleep(1.5)  # in-progress marks of killed handlers expire; late copies settle
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        keys = [k.decode() for k in client.lrange(prefix + ":effects", 0, -1)]
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()
    assert kills == 3
    assert set(keys) == {f"k{i}" for i in range(total)}  # none lost
    assert len(keys) == total  # no effect twice: the dedup store absorbed the redeliveries
    assert admin.depth(f"{queue}.dead") == 0
    assert all(p.returncode == 0 for p in workers)  # SIGTERM: graceful stop


def test_poison_message_ends_in_dead_letter_queue(
    amqp_url: str, admin: RabbitMQBroker, names: Names
) -> None:
    from scalepatterns.queue import DeadLetters

    queue = names.queue()

    def handler(message: Message) -> None:
        raise KeyError("missing field 'email'")

    policy = RetryPolicy(attempts=3, wait=lambda attempt: 0.1)
    with Worker(admin, queue, handler, retry=policy):
        message_id = Producer(admin).publish(queue, {"user": 1})
        wait_until(lambda: DeadLetters(admin, queue).count() == 1, what="the dead letter")
    [dead] = DeadLetters(admin, queue).inspect()
    assert (dead.id, dead.error_type, dead.attempts) == (message_id, "KeyError", 3)
    assert "missing field" in (dead.error_message or "")


def _consumers(amqp_url: str, queue: str) -> int:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.consumer_count)
    finally:
        connection.close()


def test_a_publish_the_broker_refuses_leaves_consumers_and_other_publishes_alone(
    amqp_url: str, names: Names
) -> None:
    from scalepatterns.queue import Outgoing, Properties, PublishError

    queue = names.queue()
    seen: list[Message] = []
    recorder = EventRecorder()
    listeners = Listeners()
    listeners.add(recorder, Reconnected)
    with RabbitMQBroker(amqp_url, listeners=listeners) as broker:
        worker = Worker(broker, queue, seen.append, prefetch=5)
        with worker:
            missing = Outgoing(f"{queue}.no_such_exchange", queue, b"{}", Properties("bad"))
            with pytest.raises(PublishError) as refused:
                broker.publish([missing])  # NOT_FOUND closes the publishing channel
            assert set(refused.value.failed) == {"bad"}
            Producer(broker).publish_many(queue, range(20))  # on the reopened channel
            wait_until(lambda: len(seen) == 20)
            assert _consumers(amqp_url, queue) == 1  # not consuming twice
        assert _consumers(amqp_url, queue) == 0  # no consumer left behind by stop()
        Producer(broker).publish_many(queue, range(3))
        assert broker.depth(queue) == 3  # nobody holds them unacked
        assert recorder.of_type(Reconnected) == []  # the connection never went away
        assert broker.connections == 1


def test_a_consumer_whose_queue_is_gone_for_a_while_consumes_again(
    amqp_url: str, admin: RabbitMQBroker, names: Names
) -> None:
    queue = names.queue()
    seen: list[Message] = []
    with RabbitMQBroker(amqp_url) as broker:
        worker = Worker(broker, queue, seen.append)
        with worker:
            admin.delete_queue(queue)  # basic.cancel, then consuming again fails: NOT_FOUND
            time.sleep(2.5)  # longer than the first retry: the channel is closed by then
            admin.declare_queue(worker.spec)
            Producer(admin).publish(queue, "back")
            wait_until(lambda: len(seen) == 1, timeout=30)
    assert seen[0].body == "back"


def test_a_block_does_not_outlive_its_connection(
    amqp_url: str, proxy: TcpProxy, names: Names
) -> None:
    from types import SimpleNamespace

    queue = names.queue()
    with RabbitMQBroker(proxied(amqp_url, proxy), blocked_timeout=1) as broker:
        producer = Producer(broker)
        producer.publish(queue, "before")
        # What pika calls on connection.blocked; then the connection dies while blocked.
        blocked = SimpleNamespace(method=SimpleNamespace(reason="low on memory"))
        broker._link._on_blocked(None, blocked)
        proxy.cut()
        wait_until(lambda: broker.connections == 2, timeout=30)
        producer.publish(queue, "after the reconnect")  # the new connection is not blocked
        assert broker.depth(queue) == 2
