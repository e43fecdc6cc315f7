"""`RedisBreakerState`: a URL instead of a client, `open_until` for operators, and errors that
name the Redis server."""

from __future__ import annotations

import fakeredis
import pytest

from scalepatterns import FakeClock
from scalepatterns.errors import BackendUnavailable, ConfigurationError
from scalepatterns.resilience import CircuitBreaker, RedisBreakerState


def test_open_until_reads_what_a_breaker_published() -> None:
    clock = FakeClock()
    shared = RedisBreakerState(fakeredis.FakeRedis(), prefix="t:", clock=clock)
    assert shared.open_until("payments") is None
    breaker = CircuitBreaker(name="payments", shared=shared, cooldown=30, clock=clock)
    breaker.trip()
    until, left = shared.open_until("payments") or (0.0, 0.0)
    assert left == pytest.approx(30, abs=0.01)
    assert until == pytest.approx(clock.time() + 30, abs=0.01)
    clock.advance(31)
    assert shared.open_until("payments") is None  # past its time, even before Redis expires it


def test_a_url_makes_a_client_and_errors_name_the_server() -> None:
    shared = RedisBreakerState("redis://:hunter2@127.0.0.1:1/0", prefix="t:")
    with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1:1") as caught:
        shared.open_until("payments")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(BackendUnavailable, match=r"at 127\.0\.0\.1:1 failed"):
        shared.read_open("payments")
    assert "127.0.0.1:1" in repr(shared)
    shared.close()


def test_a_bad_url_is_refused_naming_the_parameter() -> None:
    with pytest.raises(ConfigurationError, match="client="):
        RedisBreakerState("notaurl")
