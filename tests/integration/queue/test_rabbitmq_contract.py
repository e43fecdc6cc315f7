"""The broker contracts against a real RabbitMQ, sync and async."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from scalepatterns.queue import AsyncRabbitMQBroker, RabbitMQBroker
from scalepatterns.queue.broker import AsyncBroker
from scalepatterns.queue.testing import AsyncBrokerContract, BrokerContract

pytestmark = pytest.mark.rabbitmq


class TestRabbitMQBroker(BrokerContract):
    @pytest.fixture
    def broker(self, amqp_url: str) -> Iterator[RabbitMQBroker]:
        broker = RabbitMQBroker(amqp_url)
        yield broker
        broker.close()


class TestAsyncRabbitMQBroker(AsyncBrokerContract):
    @pytest.fixture
    def make_broker(self, amqp_url: str) -> Callable[[], AsyncBroker]:
        return lambda: AsyncRabbitMQBroker(amqp_url)
