"""``scalepatterns limiter peek`` and ``breaker status`` on the real Redis."""

from __future__ import annotations

import json

import pytest
import redis

from scalepatterns import RateLimiter
from scalepatterns.cli import exits, run
from scalepatterns.resilience import CircuitBreaker, RedisBreakerState

pytestmark = pytest.mark.redis


@pytest.fixture
def cleanup(redis_url: str, unique_name: str):  # type: ignore[no-untyped-def]
    yield unique_name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{unique_name}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.parametrize("algorithm", ["gcra", "sliding-window", "fixed-window"])
def test_limiter_peek_shows_what_the_fleet_spent(
    redis_url: str, cleanup: str, algorithm: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = cleanup
    limiter = RateLimiter("5/minute", algorithm=algorithm, redis=redis_url, prefix=prefix)
    for _ in range(3):
        assert limiter.acquire("user:42").allowed
    argv = ["limiter", "peek", "user:42", "--rate", "5/minute", "--algorithm", algorithm]
    argv += ["--prefix", prefix, "--redis-url", redis_url, "--json"]
    for _ in range(2):  # peeking spends nothing
        assert run(argv) == exits.OK
        printed = json.loads(capsys.readouterr().out)
        assert (printed["remaining"], printed["allowed"], printed["burst"]) == (2, True, 5)
        assert printed["redis_key"] == f"{prefix}{{user:42}}"
        assert 0 < printed["reset_after"] <= 120
    assert limiter.acquire("user:42").remaining == 1
    limiter.close()


def test_breaker_status_exits_1_while_open(
    redis_url: str, cleanup: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"{cleanup}:breaker:"
    argv = ["breaker", "status", "payments", "--prefix", prefix, "--redis-url", redis_url]
    assert run([*argv, "--json"]) == exits.OK
    assert json.loads(capsys.readouterr().out)["open"] is False

    shared = RedisBreakerState(redis_url, prefix=prefix)
    CircuitBreaker(name="payments", shared=shared, cooldown=60).trip()
    assert run([*argv, "--json"]) == exits.FOUND
    printed = json.loads(capsys.readouterr().out)
    assert printed["open"] is True
    assert 50 < printed["seconds_left"] <= 60
    assert run(argv) == exits.FOUND
    assert "open until" in capsys.readouterr().out
    shared.close()


def test_a_dead_redis_exits_3_and_names_the_server(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["limiter", "peek", "k", "--rate", "1/second", "--redis-url", "redis://:pw1@127.0.0.1:1"]
    assert run(argv) == exits.UNREACHABLE
    error = capsys.readouterr().err
    assert "127.0.0.1:1" in error
    assert "pw1" not in error
