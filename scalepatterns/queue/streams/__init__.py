"""Redis Streams brokers: `RedisStreamsBroker` (redis-py, threads) and
`AsyncRedisStreamsBroker` (``redis.asyncio``, the application's event loop).

Both run one core (`core.py`): key naming (`keys.py`), the Lua scripts that move messages
(`scripts.py`), the entry format (`envelope.py`) and the consuming loop (`consumer.py`),
written once as flows; they differ only in how a caller waits. redis is imported when a
broker is constructed.
"""

from __future__ import annotations

from scalepatterns.queue.streams.async_broker import AsyncRedisStreamsBroker
from scalepatterns.queue.streams.sync_broker import RedisStreamsBroker

__all__ = ["AsyncRedisStreamsBroker", "RedisStreamsBroker"]
