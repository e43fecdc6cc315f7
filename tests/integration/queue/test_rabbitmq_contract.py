"""The broker contract against a real RabbitMQ."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scalepatterns.queue import RabbitMQBroker
from scalepatterns.queue.testing import BrokerContract

pytestmark = pytest.mark.rabbitmq


class TestRabbitMQBroker(BrokerContract):
    @pytest.fixture
    def broker(self, amqp_url: str) -> Iterator[RabbitMQBroker]:
        broker = RabbitMQBroker(amqp_url)
        yield broker
        broker.close()
