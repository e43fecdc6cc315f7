"""QueueBackpressure on the real RabbitMQ: a producer faster than its consumer stays between
the watermarks, and every message published is consumed (nothing lost)."""

from __future__ import annotations

import threading
import time

import pika
import pytest

from scalepatterns import EventRecorder, Listeners, QueueBackpressure
from scalepatterns.backpressure import QueueReleased, QueueThrottled, RabbitMQQueueDepth

pytestmark = pytest.mark.rabbitmq

TOTAL = 400
HIGH, LOW = 40, 15


def _consume(
    url: str, queue: str, expected: int, received: list[int], stop: threading.Event
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    deadline = time.monotonic() + 60
    try:
        while len(received) < expected and not stop.is_set() and time.monotonic() < deadline:
            method, _props, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                time.sleep(0.005)
                continue
            time.sleep(0.002)  # a slow consumer: the producer is several times faster
            received.append(int(body))
            channel.basic_ack(method.delivery_tag)
    finally:
        connection.close()


def test_producer_held_between_the_watermarks_and_nothing_lost(amqp_url, unique_name):
    listeners = Listeners()
    recorder = EventRecorder()
    listeners.add(recorder)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.queue_declare(unique_name, durable=False)
    channel.confirm_delivery()  # a publish returns once the broker has the message
    depth = RabbitMQQueueDepth(amqp_url, unique_name)
    gate = QueueBackpressure(
        depth,
        high=HIGH,
        low=LOW,
        mode="block",
        wait_interval=0.01,
        timeout=30,
        queue=unique_name,
        listeners=listeners,
    )
    received: list[int] = []
    stop = threading.Event()
    consumer = threading.Thread(
        target=_consume, args=(amqp_url, unique_name, TOTAL, received, stop), daemon=True
    )
    consumer.start()
    readings: list[int] = []
    try:
        for i in range(TOTAL):
            assert gate.admit()
            readings.append(gate.depth)
            channel.basic_publish("", unique_name, str(i).encode())
        consumer.join(60)
    finally:
        stop.set()
        consumer.join(5)
        depth.close()
        channel.queue_delete(unique_name)
        connection.close()

    assert sorted(received) == list(range(TOTAL))  # published == consumed, none lost
    # Each admitted publish saw a depth under high (one in flight at most: confirms).
    assert max(readings) < HIGH
    throttled = recorder.of_type(QueueThrottled)
    released = recorder.of_type(QueueReleased)
    assert len(throttled) >= 2, "the producer never outran the consumer"
    assert all(e.depth >= HIGH for e in throttled)
    assert all(e.depth <= LOW for e in released)
    assert gate.blocked_seconds > 0
