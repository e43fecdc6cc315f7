"""A message the broker nacks is reported as refused, never as sent."""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest

from scalepatterns.queue import Producer, PublishError, RabbitMQBroker
from scalepatterns.queue.broker import Delivery
from scalepatterns.queue.testing import Names

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def broker(amqp_url: str) -> Iterator[RabbitMQBroker]:
    broker = RabbitMQBroker(amqp_url)
    yield broker
    broker.close()


def test_publishes_nacked_by_a_full_queue_raise_and_name_the_refused_messages(
    amqp_url: str, broker: RabbitMQBroker, names: Names
) -> None:
    queue = names.queue("full")
    # A queue that holds one message and nacks publishes beyond it (RabbitMQ's
    # reject-publish overflow): the broker's own way of refusing a message.
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().queue_declare(
            queue, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
        )
    finally:
        connection.close()

    producer = Producer(broker, reconnect_timeout=0)
    with pytest.raises(PublishError) as info:
        producer.publish_many(queue, [{"n": n} for n in range(3)])

    assert info.value.queue == queue
    assert len(info.value.failed) == 2
    assert all("nack" in reason for reason in info.value.failed.values())
    assert broker.depth(queue) == 1, "exactly the confirmed message was stored"

    with pytest.raises(PublishError) as single:
        producer.publish(queue, {"n": 99})
    assert len(single.value.failed) == 1
    assert broker.depth(queue) == 1


def test_a_delivery_settled_twice_leaves_the_channel_open(
    broker: RabbitMQBroker, names: Names
) -> None:
    from scalepatterns.queue import QueueSpec
    from scalepatterns.queue.testing import wait_until

    queue = names.queue("twice")
    broker.declare_queue(QueueSpec(queue))
    bodies: list[bytes] = []

    def on_delivery(delivery: Delivery) -> None:
        delivery.ack()
        delivery.reject(requeue=True)  # a second settlement: ignored, not a channel error
        bodies.append(delivery.body)

    subscription = broker.consume(queue, prefetch=1, on_delivery=on_delivery)
    try:
        producer = Producer(broker)
        producer.publish(queue, {"n": 1})
        wait_until(lambda: len(bodies) == 1)
        producer.publish(queue, {"n": 2})
        wait_until(lambda: len(bodies) == 2)  # the channel survived the double settlement
    finally:
        subscription.close()
    assert broker.depth(queue) == 0, "the reject after the ack did not requeue anything"
