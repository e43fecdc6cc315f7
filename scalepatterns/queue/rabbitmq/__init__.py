"""RabbitMQ brokers over pika: `RabbitMQBroker` (an I/O thread) and `AsyncRabbitMQBroker`
(the application's asyncio loop).

Both run one connection core (`link.py`): reconnects, publisher-confirm bookkeeping
(`confirms.py`, pure), consumers (`consumer.py`) and declarations (`topology.py`); they
differ only in how a caller waits. pika is imported when a broker is constructed.
"""

from __future__ import annotations

from scalepatterns.queue.rabbitmq.async_broker import AsyncRabbitMQBroker
from scalepatterns.queue.rabbitmq.sync_broker import RabbitMQBroker

__all__ = ["AsyncRabbitMQBroker", "RabbitMQBroker"]
