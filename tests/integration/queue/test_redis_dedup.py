"""`RedisDedupStore` against a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scalepatterns.queue import Claim, RedisDedupStore

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_url: str, unique_name: str) -> Iterator[tuple[RedisDedupStore, object]]:
    import redis

    client = redis.Redis.from_url(redis_url)
    yield RedisDedupStore(client, prefix=f"{unique_name}:"), client
    for key in client.scan_iter(match=f"{unique_name}:*"):
        client.delete(key)
    client.close()


def test_claim_complete_release_on_redis(store: tuple[RedisDedupStore, object]) -> None:
    dedup, client = store
    assert dedup.claim("m", 5) is Claim.ACQUIRED
    assert dedup.claim("m", 5) is Claim.BUSY  # a second worker backs off
    dedup.release("m")
    assert dedup.claim("m", 5) is Claim.ACQUIRED
    dedup.complete("m", 60)
    dedup.release("m")  # never drops a done mark
    assert dedup.claim("m", 5) is Claim.DONE
    assert 0 < client.pttl(f"{dedup._prefix}m") <= 60_000  # type: ignore[attr-defined]


def test_in_progress_mark_expires(store: tuple[RedisDedupStore, object]) -> None:
    import time

    dedup, _client = store
    assert dedup.claim("crashed", 0.05) is Claim.ACQUIRED
    time.sleep(0.1)  # Redis expires the mark of a worker that died mid-handler
    assert dedup.claim("crashed", 5) is Claim.ACQUIRED
