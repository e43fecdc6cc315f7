"""CircuitBreaker: the driver around the core, on the sync and the async side."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging

import fakeredis
import pytest

from scalepatterns import CircuitOpen, ConfigurationError, EventRecorder, FakeClock, Listeners
from scalepatterns.resilience import (
    BreakerClosed,
    BreakerHalfOpened,
    BreakerOpened,
    BreakerRejected,
    CircuitBreaker,
    MemoryBreakerState,
    RedisBreakerState,
)

from .conftest import Side


class Flaky:
    def __init__(self) -> None:
        self.calls = 0
        self.failing = True

    def __call__(self) -> str:
        self.calls += 1
        if self.failing:
            raise ConnectionError("down")
        return "ok"


def make(clock: FakeClock, listeners: Listeners | None = None, **options: object) -> CircuitBreaker:
    settings: dict[str, object] = {
        "window": 4,
        "minimum_calls": 4,
        "cooldown": 10.0,
        "trial_calls": 2,
    }
    settings.update(options)
    return CircuitBreaker(name="dep", clock=clock, listeners=listeners or Listeners(), **settings)  # type: ignore[arg-type]


def fail_times(side: Side, breaker: CircuitBreaker, fn: Flaky, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            side.through(breaker, fn)


def test_full_cycle_closed_open_half_open_closed(side: Side) -> None:
    clock, listeners, recorder = FakeClock(), Listeners(), EventRecorder()
    listeners.add(recorder)
    breaker = make(clock, listeners)
    fn = Flaky()
    fail_times(side, breaker, fn, 3)
    assert breaker.state == "closed"  # 3 < minimum_calls
    fail_times(side, breaker, fn, 1)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen) as info:
        side.through(breaker, fn)
    assert fn.calls == 4  # refused without calling
    assert info.value.name == "dep"
    assert info.value.retry_after == 10.0
    clock.advance(4)
    assert breaker.retry_after() == 6.0
    clock.advance(6)
    assert breaker.state == "half_open"
    fn.failing = False
    assert side.through(breaker, fn) == "ok"
    assert breaker.state == "half_open"
    assert side.through(breaker, fn) == "ok"
    assert breaker.state == "closed"
    kinds = [type(e) for e in recorder.events]
    assert kinds == [BreakerOpened, BreakerRejected, BreakerHalfOpened, BreakerClosed]
    opened = recorder.of_type(BreakerOpened)[0]
    assert (opened.failure_rate, opened.wait) == (1.0, 10.0)


def test_failed_trial_reopens(side: Side) -> None:
    clock = FakeClock()
    breaker = make(clock)
    fn = Flaky()
    fail_times(side, breaker, fn, 4)
    clock.advance(10)
    fail_times(side, breaker, fn, 1)
    assert breaker.state == "open"
    assert breaker.retry_after() == 10.0


def test_half_open_admits_only_the_trial_calls() -> None:
    clock = FakeClock()
    breaker = make(clock, trial_calls=2)
    breaker.trip()
    clock.advance(10)
    started: list[int] = []
    waits: list[float] = []
    refused = 0

    def nested(depth: int) -> None:
        nonlocal refused
        started.append(depth)
        if depth < 3:
            try:
                breaker.call(nested, depth + 1)
            except CircuitOpen as exc:
                refused += 1
                waits.append(exc.retry_after)

    breaker.call(nested, 0)  # three calls in flight at once: two trials, one refused
    assert started == [0, 1]
    assert refused == 1
    assert waits == [0.0]


def test_failure_rate_below_threshold_stays_closed(side: Side) -> None:
    breaker = make(FakeClock(), failure_rate_threshold=0.75)
    fn = Flaky()
    for i in range(40):
        fn.failing = i % 2 == 0  # 50% failures
        with contextlib.suppress(ConnectionError):
            side.through(breaker, fn)
    assert breaker.state == "closed"
    assert breaker.metrics()["failure_rate"] == 0.5


def test_slow_calls_trip_the_breaker(side: Side) -> None:
    clock = FakeClock()
    breaker = make(clock, slow_call_duration=1.0, slow_call_rate_threshold=0.5)

    def slow() -> str:
        clock.advance(2.0)
        return "late"

    for _ in range(4):
        assert side.through(breaker, slow) == "late"
    assert breaker.state == "open"


def test_time_window_forgets_old_failures() -> None:
    clock = FakeClock()
    breaker = make(clock, window_type="time", window=10, minimum_calls=3)
    fn = Flaky()
    fail_times(Side("sync"), breaker, fn, 2)
    clock.advance(11)
    fail_times(Side("sync"), breaker, fn, 2)
    assert breaker.state == "closed"  # only two failures inside any 10 s
    assert breaker.metrics()["calls"] == 2
    fail_times(Side("sync"), breaker, fn, 1)
    assert breaker.state == "open"


def test_ignored_and_non_failure_exceptions(side: Side) -> None:
    breaker = make(FakeClock(), on=ConnectionError, ignore=KeyError)

    def lookup() -> None:
        raise KeyError("missing")

    def bad_input() -> None:
        raise ValueError("bad input")

    for _ in range(8):
        with pytest.raises(KeyError):
            side.through(breaker, lookup)
        with pytest.raises(ValueError):
            side.through(breaker, bad_input)
    assert breaker.state == "closed"
    metrics = breaker.metrics()
    assert (metrics["calls"], metrics["failures"]) == (4, 0)  # ValueErrors counted as successes


def test_decorator_keeps_signature_and_kind() -> None:
    breaker = make(FakeClock())

    @breaker
    def add(a: int, b: int = 2) -> int:
        """Adds."""
        return a + b

    @breaker
    async def aadd(a: int) -> int:
        return a + 1

    assert add(1) == 3
    assert add.__doc__ == "Adds."
    assert list(inspect.signature(add).parameters) == ["a", "b"]
    assert inspect.iscoroutinefunction(aadd)
    assert asyncio.run(aadd(1)) == 2


def test_cancellation_releases_a_trial_slot() -> None:
    clock = FakeClock()
    breaker = make(clock, trial_calls=1)
    breaker.trip()
    clock.advance(10)

    async def hang() -> None:
        await asyncio.sleep(10)

    async def scenario() -> str:
        task = asyncio.ensure_future(breaker.acall(hang))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        async def ok() -> str:
            return "ok"

        return await breaker.acall(ok)  # the cancelled trial gave its slot back

    assert asyncio.run(scenario()) == "ok"
    assert breaker.state == "closed"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("failure_rate_threshold", 0),
        ("failure_rate_threshold", 1.5),
        ("window", 0),
        ("window_type", "sliding"),
        ("minimum_calls", 50),
        ("cooldown", 0),
        ("trial_calls", 0),
        ("slow_call_duration", -1),
        ("on", "ConnectionError"),
        ("sync_interval", -1),
    ],
)
def test_bad_configuration_is_refused(option: str, value: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        CircuitBreaker(name="x", **{option: value})  # type: ignore[arg-type]
    assert info.value.parameter == option


@pytest.mark.parametrize("store", ["memory", "fakeredis"])
def test_shared_state_trips_the_fleet(store: str) -> None:
    clock = FakeClock()
    shared = (
        MemoryBreakerState(clock=clock)
        if store == "memory"
        else RedisBreakerState(fakeredis.FakeRedis(), prefix="t:", clock=clock)
    )
    one = make(clock, shared=shared, sync_interval=1.0)
    two = make(clock, shared=shared, sync_interval=1.0)
    assert two.state == "closed"  # reads the store once: nothing there
    fail_times(Side("sync"), one, Flaky(), 4)
    assert one.state == "open"
    assert two.state == "closed"  # within its sync interval it has not looked again
    clock.advance(1.0)
    assert two.state == "open"
    with pytest.raises(CircuitOpen) as info:
        two.call(Flaky())
    assert info.value.retry_after == pytest.approx(9.0)
    clock.advance(9.0)
    assert two.state == "half_open"
    assert shared.read_open("dep") is None  # the key expired with the open period


def test_dead_redis_does_not_break_the_breaker(caplog: pytest.LogCaptureFixture) -> None:
    class DeadRedis:
        def get(self, key: str) -> None:
            raise ConnectionError("refused")

        set = delete = get  # type: ignore[assignment]

    breaker = make(FakeClock(), shared=RedisBreakerState(DeadRedis()), sync_interval=0)
    with caplog.at_level(logging.WARNING, "scalepatterns.resilience"):
        fn = Flaky()
        fail_times(Side("sync"), breaker, fn, 4)
    assert breaker.state == "open"  # decided locally
    assert "shared state" in caplog.text or "publishing" in caplog.text
