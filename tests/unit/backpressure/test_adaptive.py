"""AdaptiveLimiter against a simulated dependency with a concurrency knee (fake clock)."""

from __future__ import annotations

import asyncio
import heapq

import pytest

from scalepatterns import (
    AdaptiveLimiter,
    BulkheadFull,
    ConfigurationError,
    EventRecorder,
    FakeClock,
    Listeners,
)
from scalepatterns.backpressure import AIMD, Gradient, LimitChanged, Vegas, WorkShed

BASE = 0.010  # the dependency's latency at or under its knee


def simulate(limiter: AdaptiveLimiter, clock: FakeClock, knee: int, completions: int) -> list[int]:
    """A closed loop that always has work: keep the limiter full, finish calls in time order.

    Past the knee the dependency queues: a call's latency grows with the calls in flight.
    """
    pending: list[tuple[float, int, object]] = []
    seq = 0
    limits = []
    for _ in range(completions):
        while (permit := limiter.try_acquire()) is not None:
            latency = BASE * max(1.0, limiter.inflight / knee)
            seq += 1
            heapq.heappush(pending, (clock.monotonic() + latency, seq, permit))
        done_at, _, permit = heapq.heappop(pending)
        clock.advance(max(0.0, done_at - clock.monotonic()))
        permit.success()
        limits.append(limiter.limit)
    while pending:
        _, _, permit = heapq.heappop(pending)
        permit.ignore()
    return limits


def settled(limits: list[int]) -> float:
    tail = limits[-len(limits) // 4 :]
    return sum(tail) / len(tail)


@pytest.mark.parametrize("knees", [(20, 60, 10), (40, 15, 30)])
def test_vegas_settles_near_the_knee_and_follows_it(knees) -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter("vegas", initial_limit=5, max_limit=500, clock=clock)
    for knee in knees:
        level = settled(simulate(limiter, clock, knee, 4000))
        assert knee <= level <= knee * 1.3 + 4, (knee, level)


def test_gradient_settles_near_the_knee_and_follows_it() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(Gradient(tolerance=1.0), initial_limit=5, max_limit=500, clock=clock)
    for knee in (20, 60, 10):
        level = settled(simulate(limiter, clock, knee, 4000))
        # knee + sqrt(knee): the queue allowance the algorithm keeps on purpose
        assert knee <= level <= knee + 2 * knee**0.5 + 2, (knee, level)


def test_aimd_with_a_latency_threshold_settles_where_latency_crosses_it() -> None:
    """With the threshold at 1.25x the unloaded latency, the dependency crosses it at 1.25x
    its knee: AIMD's sawtooth should sit just under that."""
    clock = FakeClock()
    limiter = AdaptiveLimiter(
        AIMD(latency_threshold=BASE * 1.25), initial_limit=5, max_limit=500, clock=clock
    )
    for knee in (20, 60, 10):
        limits = simulate(limiter, clock, knee, 4000)
        level = settled(limits)
        assert knee * 0.9 <= level <= knee * 1.3, (knee, level)
        assert min(limits[-1000:]) >= knee * 0.8  # backs off once per round trip, no collapse


def test_low_priority_is_shed_first_under_overload() -> None:
    clock = FakeClock()
    listeners = Listeners()
    recorder = EventRecorder()
    listeners.add(recorder, WorkShed)
    limiter = AdaptiveLimiter(
        initial_limit=10, priorities=(1.0, 0.5), clock=clock, listeners=listeners
    )
    admitted = {0: 0, 1: 0}
    shed = {0: 0, 1: 0}
    permits = []
    for i in range(40):  # offered: 20 of each priority, interleaved, none finishing
        priority = i % 2
        permit = limiter.try_acquire(priority)
        if permit is None:
            shed[priority] += 1
        else:
            admitted[priority] += 1
            permits.append(permit)
    # Low priority stops at half the limit (5 in flight); high priority fills the rest.
    assert admitted == {0: 8, 1: 2}
    assert shed == {0: 12, 1: 18}
    assert limiter.inflight == 10
    assert len(recorder.events) == shed[0] + shed[1]
    with pytest.raises(BulkheadFull) as info:
        limiter.acquire(1)
    assert info.value.reason == "shed"
    for permit in permits:
        permit.ignore()
    assert limiter.inflight == 0


def test_permit_as_context_manager_learns_from_drops_and_ignores_other_errors() -> None:
    clock = FakeClock()
    listeners = Listeners()
    recorder = EventRecorder()
    listeners.add(recorder, LimitChanged)
    limiter = AdaptiveLimiter(AIMD(backoff=0.5), initial_limit=10, clock=clock, listeners=listeners)

    def timed_out() -> None:
        with limiter.acquire():
            clock.advance(0.1)
            raise TimeoutError

    def bad_request() -> None:
        with limiter.acquire():
            clock.advance(0.1)
            raise KeyError("not the dependency's fault")

    with pytest.raises(TimeoutError):
        timed_out()
    assert limiter.limit == 5
    with pytest.raises(KeyError):
        bad_request()
    assert limiter.limit == 5
    assert [(e.old, e.new) for e in recorder.events] == [(10, 5)]

    async def main() -> None:
        async with limiter.acquire():
            clock.advance(0.01)

    asyncio.run(main())
    assert limiter.inflight == 0


def test_vegas_learns_nothing_when_the_limit_is_not_used() -> None:
    vegas = Vegas()
    assert vegas.update(50.0, 0.01, 2, False) == 50.0
    assert vegas.update(50.0, 0.5, 2, False) == 50.0


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"algorithm": "nope"}, "algorithm"),
        ({"initial_limit": 0}, "initial_limit"),
        ({"min_limit": 5, "max_limit": 2}, "max_limit"),
        ({"priorities": ()}, "priorities"),
        ({"priorities": (1.0, 1.5)}, "priorities"),
        ({"priorities": (0.5, 1.0)}, "priorities"),  # a lower priority may not get more
        ({"drop_on": [TimeoutError]}, "drop_on"),  # a list: isinstance() would fail later
    ],
)
def test_bad_configuration(kwargs: dict, parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        AdaptiveLimiter(**kwargs)
    assert info.value.parameter == parameter


def test_bad_priority_at_the_call() -> None:
    with pytest.raises(ConfigurationError) as info:
        AdaptiveLimiter().try_acquire(3)
    assert info.value.parameter == "priority"
    with pytest.raises(ConfigurationError):
        AIMD(backoff=1.5)
    with pytest.raises(ConfigurationError):
        Vegas(alpha=6, beta=3)
    with pytest.raises(ConfigurationError):
        Gradient(tolerance=0.5)


@pytest.mark.parametrize("algorithm", ["aimd", "vegas", "gradient"])
def test_drops_shrink_the_limit_even_when_they_take_no_time(algorithm: str) -> None:
    clock = FakeClock()  # a drop that fails at once (or a coarse clock): rtt == 0
    limiter = AdaptiveLimiter(algorithm, initial_limit=20, clock=clock, listeners=Listeners())
    for _ in range(5):
        limiter.acquire().dropped()
    assert limiter.limit < 20
