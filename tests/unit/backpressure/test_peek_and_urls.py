"""`RateLimiter.peek` (what a key has left, spending nothing) and Redis URLs for the limiter."""

from __future__ import annotations

import fakeredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalepatterns import FakeClock, RateLimiter
from scalepatterns.backpressure import GCRA, FixedWindow, Rate, SlidingWindow
from scalepatterns.backpressure.algorithms import Algorithm
from scalepatterns.errors import ConfigurationError

ALGORITHMS = ["gcra", "sliding-window", "fixed-window"]


def algorithms() -> list[Algorithm]:
    rate = Rate(5, 1.0)
    return [GCRA(rate), GCRA(rate, burst=2), SlidingWindow(rate), FixedWindow(rate)]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(range(4)),
    st.lists(st.tuples(st.floats(0, 0.7), st.integers(1, 2)), max_size=30),
)
def test_peek_says_what_one_unit_would_get_and_spends_nothing(
    which: int, calls: list[tuple[float, int]]
) -> None:
    algorithm = algorithms()[which]
    state, now = None, 1_000.0
    for gap, cost in calls:
        now += gap
        peeked = algorithm.peek(state, now)
        assert algorithm.peek(state, now) == peeked  # reading twice changes nothing
        decided, _ = algorithm.decide(state, now, 1)
        assert peeked.allowed == decided.allowed
        assert peeked.retry_after == decided.retry_after
        if decided.allowed:  # one unit spent from what the peek saw
            assert peeked.remaining == decided.remaining + 1
        else:
            assert peeked.remaining == decided.remaining
        assert peeked.reset_after >= 0
        if peeked.remaining == algorithm.max_cost:
            assert peeked.reset_after == 0.0 or isinstance(algorithm, SlidingWindow)
        _, state = algorithm.decide(state, now, min(cost, algorithm.max_cost))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_memory_peek_does_not_spend(algorithm: str) -> None:
    clock = FakeClock()
    limiter = RateLimiter("3/second", algorithm=algorithm, clock=clock)
    assert limiter.peek("ada").remaining == 3
    limiter.acquire("ada")
    for _ in range(5):
        assert limiter.peek("ada").remaining == 2
    assert limiter.acquire("ada").remaining == 1


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_redis_peek_reads_the_scripts_state(algorithm: str) -> None:
    limiter = RateLimiter("3/minute", algorithm=algorithm, redis=fakeredis.FakeRedis())
    assert limiter.peek("ada").remaining == 3
    limiter.acquire("ada")
    limiter.acquire("ada")
    peeked = limiter.peek("ada")
    assert (peeked.allowed, peeked.remaining) == (True, 1)
    assert 0 < peeked.reset_after <= 120
    limiter.acquire("ada")
    refused = limiter.peek("ada")
    assert (refused.allowed, refused.remaining) == (False, 0)
    assert refused.retry_after > 0
    assert limiter.peek("bob").remaining == 3


def test_peek_with_another_algorithm_than_the_writer_says_so() -> None:
    client = fakeredis.FakeRedis()
    RateLimiter("3/minute", redis=client).acquire("ada")
    with pytest.raises(ConfigurationError, match="algorithm"):
        RateLimiter("3/minute", algorithm="fixed-window", redis=client).peek("ada")


def test_a_limiter_takes_a_redis_url_and_fails_open_on_a_dead_server() -> None:
    limiter = RateLimiter("1/second", redis="redis://127.0.0.1:1/0", failure_threshold=1)
    assert limiter.acquire("ada").allowed  # fail open: no AttributeError on a str
    assert limiter.store.backend_errors == 1
    limiter.close()


@pytest.mark.parametrize("url", ["notaurl", "http://127.0.0.1", "redis+sentinel://h/"])
def test_a_bad_redis_url_is_refused_at_construction(url: str) -> None:
    with pytest.raises(ConfigurationError, match="redis="):
        RateLimiter("1/second", redis=url)
