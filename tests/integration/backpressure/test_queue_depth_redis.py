"""QueueBackpressure reading a real Redis list (LLEN) and stream (XLEN)."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from scalepatterns import QueueBackpressure, QueueFull
from scalepatterns.backpressure import RedisListDepth, RedisStreamDepth

pytestmark = pytest.mark.redis


@pytest.fixture
def client(redis_url: str, unique_name: str):
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.delete(f"{unique_name}:list", f"{unique_name}:stream")
    conn.close()


def test_list_producer_held_under_high_and_nothing_lost(client, unique_name):
    key = f"{unique_name}:list"
    gate = QueueBackpressure(
        RedisListDepth(client, key), high=30, low=10, wait_interval=0.005, timeout=30
    )
    total = 300
    consumed: list[int] = []

    def consume() -> None:
        conn = redis.Redis(connection_pool=client.connection_pool)
        deadline = time.monotonic() + 60
        while len(consumed) < total and time.monotonic() < deadline:
            item = conn.blpop([key], timeout=1)
            if item is not None:
                consumed.append(int(item[1]))
                time.sleep(0.001)  # a consumer slower than the producer

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    depths = []
    for i in range(total):
        assert gate.admit()
        depths.append(gate.depth)
        client.rpush(key, i)
    worker.join(60)
    assert sorted(consumed) == list(range(total))
    assert max(depths) < 30
    assert gate.blocked_seconds > 0


def test_stream_depth_in_reject_mode(client, unique_name):
    key = f"{unique_name}:stream"
    gate = QueueBackpressure(RedisStreamDepth(client, key), high=5, low=2, mode="reject")
    for i in range(5):
        assert gate.admit()
        client.xadd(key, {"n": i})
    with pytest.raises(QueueFull) as info:
        gate.admit()
    assert info.value.depth == 5
    client.xtrim(key, maxlen=2, approximate=False)
    assert gate.admit()
