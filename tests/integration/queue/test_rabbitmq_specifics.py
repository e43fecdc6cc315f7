"""RabbitMQ-only behaviour: raw pika interop, flow control, quorum queues, topology conflicts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pika
import pytest

from scalepatterns.events import EventRecorder, Listeners
from scalepatterns.queue import (
    BrokerBlocked,
    Message,
    Producer,
    QueueSpec,
    RabbitMQBroker,
    Reconnected,
    TopologyConflict,
    Worker,
)
from scalepatterns.queue.broker import Delivery
from scalepatterns.queue.testing import Names, wait_until

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def broker(amqp_url: str) -> Iterator[RabbitMQBroker]:
    broker = RabbitMQBroker(amqp_url, blocked_timeout=0.2)
    yield broker
    broker.close()


@pytest.fixture
def bare(amqp_url: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    yield connection.channel()
    connection.close()


def test_a_bare_pika_message_is_consumed(
    broker: RabbitMQBroker, names: Names, bare: pika.adapters.blocking_connection.BlockingChannel
) -> None:
    """As in the seeds: a plain body, no properties, published with bare pika."""
    queue = names.queue()
    broker.declare_queue(QueueSpec(queue))
    bare.basic_publish("", queue, b"Hello World!")
    bare.basic_publish("", queue, json.dumps({"report": 7}).encode())
    seen: list[Message] = []
    with Worker(broker, queue, seen.append):
        wait_until(lambda: len(seen) == 2)
    assert sorted(map(repr, (m.body for m in seen))) == sorted(
        [repr(b"Hello World!"), repr({"report": 7})]
    )
    assert all(m.attempt == 1 and not m.has_id for m in seen)


def test_a_bare_pika_consumer_reads_what_the_producer_publishes(
    broker: RabbitMQBroker, names: Names, bare: pika.adapters.blocking_connection.BlockingChannel
) -> None:
    queue = names.queue()
    message_id = Producer(broker).publish(
        queue, {"email": "ada@example.com"}, type="signup", headers={"tenant": "t1"}
    )
    method, props, body = bare.basic_get(queue, auto_ack=True)
    assert method is not None
    assert json.loads(body) == {"email": "ada@example.com"}
    assert (props.message_id, props.type, props.content_type) == (
        message_id,
        "signup",
        "application/json",
    )
    assert props.delivery_mode == 2  # persistent
    assert props.headers["tenant"] == "t1"
    assert props.headers["x-sp-attempt"] == 1


def test_flow_control_is_surfaced(broker: RabbitMQBroker, names: Names) -> None:
    queue = names.queue()
    producer = Producer(broker)
    producer.publish(queue, "before")
    # What pika calls when RabbitMQ sends connection.blocked (a memory or disk alarm);
    # the shared server cannot be put under an alarm from a test.
    frame = SimpleNamespace(method=SimpleNamespace(reason="low on memory"))
    broker._link._on_blocked(None, frame)
    with pytest.raises(BrokerBlocked) as caught:
        producer.publish(queue, "while blocked")
    assert caught.value.reason == "low on memory"
    broker._link._on_unblocked(None, None)
    producer.publish(queue, "after")
    assert broker.depth(queue) == 2


def test_publish_waits_for_the_block_to_lift(amqp_url: str, names: Names) -> None:
    """The producer waits out a short block and returns once the broker confirmed."""
    with RabbitMQBroker(amqp_url, blocked_timeout=30) as broker:
        queue = names.queue()
        producer = Producer(broker)
        producer.publish(queue, "before")
        broker._link._on_blocked(None, SimpleNamespace(method=SimpleNamespace(reason="disk")))
        release = threading.Timer(0.2, broker._link._on_unblocked, args=(None, None))
        release.start()
        producer.publish(queue, "waited")  # returns once unblocked, confirmed
        release.join()
        assert broker.depth(queue) == 2


def test_heartbeats_continue_during_a_long_handler(amqp_url: str, names: Names) -> None:
    """A handler longer than two heartbeat intervals does not cost the connection."""
    recorder = EventRecorder()
    listeners = Listeners()
    listeners.add(recorder)
    queue = names.queue()
    seen: list[Message] = []
    with RabbitMQBroker(amqp_url, heartbeat=1, listeners=listeners) as broker:

        def slow(message: Message) -> None:
            time.sleep(3.5)  # RabbitMQ drops a connection after 2 missed heartbeats
            seen.append(message)

        with Worker(broker, queue, slow, concurrency=1):
            Producer(broker).publish(queue, "long job")
            wait_until(lambda: len(seen) == 1, timeout=30)
            wait_until(lambda: broker.depth(queue) == 0)
        assert broker.connections == 1
        assert recorder.of_type(Reconnected) == []
        assert not seen[0].redelivered


def test_quorum_queue_and_a_conflicting_type(broker: RabbitMQBroker, names: Names) -> None:
    queue = names.queue()
    spec = QueueSpec(queue, queue_type="quorum")
    broker.declare_queue(spec)
    seen: list[Message] = []
    with Worker(broker, spec, seen.append):
        Producer(broker).publish_many(queue, range(10))
        wait_until(lambda: len(seen) == 10)
    with pytest.raises(TopologyConflict) as caught:
        broker.declare_queue(QueueSpec(queue))  # classic over an existing quorum queue
    assert caught.value.argument == "x-queue-type"
    assert "quorum" in str(caught.value)
    assert broker.depth(queue) == 0  # the connection survived the refused declaration


def test_undeclared_queue_is_declared_on_first_publish_and_unknown_exchange_refused(
    broker: RabbitMQBroker, names: Names
) -> None:
    queue = names.queue()
    Producer(broker).publish(queue, 1)
    assert broker.depth(queue) == 1
    strict = Producer(broker, declare=False)
    from scalepatterns.queue import PublishError

    with pytest.raises(PublishError):
        strict.publish(names.queue("never_declared"), 1)


def test_worker_consumes_again_after_the_broker_cancels_it(
    broker: RabbitMQBroker, admin: RabbitMQBroker, names: Names
) -> None:
    """A queue deleted and declared again (or a quorum leader moving) cancels consumers."""
    queue = names.queue()
    seen: list[Message] = []
    worker = Worker(broker, queue, seen.append)
    with worker:
        admin.delete_queue(queue)  # the broker sends basic.cancel to the worker
        admin.declare_queue(worker.spec)
        Producer(admin).publish(queue, "after the cancel")
        wait_until(lambda: len(seen) == 1, timeout=20)
    assert seen[0].body == "after the cancel"


def test_get_on_a_missing_queue_after_a_get_returns_none(amqp_url: str, names: Names) -> None:
    """The basic.get channel is reused: its close must fail the current get, not the first."""
    broker = RabbitMQBroker(amqp_url)
    try:
        queue = names.queue()
        broker.declare_queue(QueueSpec(queue))
        assert broker.get(queue) is None  # opens the shared basic.get channel
        missing = names.queue("missing")
        # Before the fix the channel's close (404) failed the first get's result, and this
        # one waited its full 30 s and raised DeadlineExceeded.
        assert broker.get(missing) is None
        Producer(broker).publish(queue, {"n": 1})
        got: list[Delivery | None] = []
        wait_until(lambda: got.append(broker.get(queue)) or got[-1] is not None)
        delivery = got[-1]
        assert delivery is not None
        assert json.loads(delivery.body) == {"n": 1}
        delivery.ack()
    finally:
        broker.close()


def test_an_argument_pika_refuses_fails_that_call_not_the_connection(
    amqp_url: str, names: Names
) -> None:
    """pika raises inside its I/O loop on a prefetch over 16 bits (the Worker refuses it
    earlier; a direct `consume` does not): the connection was torn down and reopened in a
    loop, failing every other call on it."""
    from scalepatterns import BackendUnavailable
    from scalepatterns.queue import QueueSpec

    queue = names.queue()
    with RabbitMQBroker(amqp_url) as broker:
        broker.declare_queue(QueueSpec(queue))
        with pytest.raises(BackendUnavailable):
            broker.consume(queue, prefetch=70_000, on_delivery=lambda delivery: None)
        Producer(broker).publish(queue, "still connected")
        assert broker.depth(queue) == 1
        assert broker.connections == 1


def test_threads_may_get_from_one_broker_at_once(amqp_url: str, names: Names) -> None:
    queue = names.queue()
    got: list[object] = []
    errors: list[BaseException] = []
    with RabbitMQBroker(amqp_url) as broker:
        Producer(broker).publish_many(queue, range(200))

        def drain() -> None:
            try:
                while (delivery := broker.get(queue)) is not None:
                    delivery.ack()
                    got.append(delivery.body)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=drain) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(got) == 200
        wait_until(lambda: broker.depth(queue) == 0)
