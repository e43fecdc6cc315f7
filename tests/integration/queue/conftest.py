"""Fixtures of the queue block's RabbitMQ tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scalepatterns.queue import RabbitMQBroker
from scalepatterns.queue.testing import Names


@pytest.fixture
def admin(amqp_url: str) -> Iterator[RabbitMQBroker]:
    """A direct (unproxied) connection for setup, checks and cleanup."""
    broker = RabbitMQBroker(amqp_url)
    yield broker
    broker.close()


@pytest.fixture
def names(admin: RabbitMQBroker) -> Iterator[Names]:
    """Unique queue names, deleted (with their dead-letter and delay queues) afterwards."""
    names = Names()
    yield names
    delays = [f"{q}.delay.{ms}ms" for q in names.queues for ms in (1000, 50, 100, 200)]
    names.cleanup(admin, delays)
