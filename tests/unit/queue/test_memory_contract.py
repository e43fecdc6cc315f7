"""The broker contracts against `MemoryBroker` and `AsyncMemoryBroker`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scalepatterns.queue import AsyncMemoryBroker, MemoryBroker
from scalepatterns.queue.testing import AsyncBrokerContract, BrokerContract


class TestMemoryBroker(BrokerContract):
    @pytest.fixture
    def broker(self) -> Iterator[MemoryBroker]:
        broker = MemoryBroker()
        yield broker
        broker.close()


class TestAsyncMemoryBroker(AsyncBrokerContract):
    @pytest.fixture
    def make_broker(self) -> type[AsyncMemoryBroker]:
        return AsyncMemoryBroker
