"""The broker contract against `MemoryBroker`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scalepatterns.queue import MemoryBroker
from scalepatterns.queue.testing import BrokerContract


class TestMemoryBroker(BrokerContract):
    @pytest.fixture
    def broker(self) -> Iterator[MemoryBroker]:
        broker = MemoryBroker()
        yield broker
        broker.close()
