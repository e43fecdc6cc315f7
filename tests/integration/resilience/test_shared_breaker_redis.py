"""A breaker shared through the real Redis: one process trips it, another sees it open."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from scalepatterns import CircuitOpen, Listeners
from scalepatterns.resilience import CircuitBreaker, RedisBreakerState
from tests.support.servers import RedisServer

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[3]

TRIP = """
import redis
from scalepatterns.resilience import CircuitBreaker, RedisBreakerState
shared = RedisBreakerState(redis.Redis.from_url({url!r}), prefix={prefix!r})
breaker = CircuitBreaker(name="payments", shared=shared, window=5, minimum_calls=5, cooldown=30)

def charge():
    raise ConnectionError("payments down")

for _ in range(5):
    try:
        breaker.call(charge)
    except ConnectionError:
        pass
print(breaker.state)
"""

OBSERVE = """
import json, redis
from scalepatterns import CircuitOpen
from scalepatterns.resilience import CircuitBreaker, RedisBreakerState
shared = RedisBreakerState(redis.Redis.from_url({url!r}), prefix={prefix!r})
breaker = CircuitBreaker(name="payments", shared=shared, cooldown=30)
calls = []
try:
    breaker.call(calls.append, 1)
    outcome = {{"refused": False}}
except CircuitOpen as exc:
    outcome = {{"refused": True, "retry_after": exc.retry_after, "name": exc.name}}
outcome["calls"] = len(calls)
outcome["state"] = breaker.state
print(json.dumps(outcome))
"""


def run(script: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def client(redis_url: str, unique_name: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    for key in client.scan_iter(f"{unique_name}:*"):
        client.delete(key)
    client.close()


def test_one_process_trips_the_other_sees_it_open(
    redis_url: str, unique_name: str, client: redis.Redis
) -> None:
    prefix = f"{unique_name}:breaker:"
    # before: a second process finds the breaker closed and calls through
    closed = json.loads(run(OBSERVE.format(url=redis_url, prefix=prefix)))
    assert closed == {"refused": False, "calls": 1, "state": "closed"}

    assert run(TRIP.format(url=redis_url, prefix=prefix)) == "open"
    ttl_ms = client.pttl(f"{prefix}payments")
    assert 0 < ttl_ms <= 30_000

    seen = json.loads(run(OBSERVE.format(url=redis_url, prefix=prefix)))
    assert seen["refused"] is True
    assert seen["calls"] == 0
    assert seen["name"] == "payments"
    assert 0 < seen["retry_after"] <= 30
    assert seen["state"] == "open"


def test_closing_clears_the_fleet_state(
    redis_url: str, unique_name: str, client: redis.Redis
) -> None:
    shared = RedisBreakerState(client, prefix=f"{unique_name}:breaker:")
    one = CircuitBreaker(name="search", shared=shared, listeners=Listeners())
    two = CircuitBreaker(name="search", shared=shared, sync_interval=0, listeners=Listeners())
    one.trip()
    with pytest.raises(CircuitOpen):
        two.call(lambda: None)
    one.reset()
    assert client.get(f"{unique_name}:breaker:search") is None
    three = CircuitBreaker(name="search", shared=shared, sync_interval=0, listeners=Listeners())
    assert three.call(lambda: "ok") == "ok"


def test_redis_dying_leaves_the_breaker_deciding_locally(throwaway_redis: RedisServer) -> None:
    client = redis.Redis.from_url(throwaway_redis.url, socket_timeout=1, socket_connect_timeout=1)
    shared = RedisBreakerState(client, prefix="t:")
    breaker = CircuitBreaker(
        name="dep", shared=shared, sync_interval=0, window=3, minimum_calls=3, listeners=Listeners()
    )
    assert breaker.call(lambda: "ok") == "ok"
    throwaway_redis.kill()

    def down() -> None:
        raise ConnectionError("dependency down")

    for _ in range(2):  # with the success before: 2 failures of 3 calls
        with pytest.raises(ConnectionError, match="dependency down"):
            breaker.call(down)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen):
        breaker.call(down)
    client.close()
