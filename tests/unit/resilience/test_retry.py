"""retry(...) and RetryBudget, on the sync and the async side."""

from __future__ import annotations

import asyncio
import inspect
import random

import pytest

from scalepatterns import ConfigurationError, DeadlineExceeded, EventRecorder, FakeClock, Listeners
from scalepatterns.resilience import (
    Retry,
    RetryAttempt,
    RetryBudget,
    RetryGaveUp,
    RetryScheduled,
    deadline,
    retry,
)

from .conftest import Side


class FailsThenWorks:
    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return "ok"


def policy(clock: FakeClock, listeners: Listeners | None = None, **options: object) -> Retry:
    return retry(clock=clock, rng=random.Random(7), listeners=listeners or Listeners(), **options)  # type: ignore[call-overload,no-any-return]


def test_retries_until_success_with_events(side: Side) -> None:
    clock, listeners, recorder = FakeClock(), Listeners(), EventRecorder()
    listeners.add(recorder)
    fn = FailsThenWorks(2)
    assert side.through(policy(clock, listeners, attempts=3, name="dep"), fn) == "ok"
    assert fn.calls == 3
    assert [e.attempt for e in recorder.of_type(RetryAttempt)] == [1, 2, 3]
    scheduled = recorder.of_type(RetryScheduled)
    assert [e.attempt for e in scheduled] == [1, 2]
    assert all(e.error == "ConnectionError" and e.source == "dep" for e in scheduled)
    # the fake clock moved by exactly the scheduled (jittered) delays
    assert clock.monotonic() == pytest.approx(sum(e.delay for e in scheduled))
    assert not recorder.of_type(RetryGaveUp)


def test_gives_up_after_attempts_and_reraises_the_last_error(side: Side) -> None:
    clock, listeners, recorder = FakeClock(), Listeners(), EventRecorder()
    listeners.add(recorder)
    fn = FailsThenWorks(10)
    with pytest.raises(ConnectionError, match="failure 3"):
        side.through(policy(clock, listeners, attempts=3), fn)
    assert fn.calls == 3
    (gave_up,) = recorder.of_type(RetryGaveUp)
    assert (gave_up.attempts, gave_up.reason) == (3, "attempts")


def test_only_named_exceptions_are_retried(side: Side) -> None:
    fn = FailsThenWorks(1, error=ValueError)
    with pytest.raises(ValueError):
        side.through(policy(FakeClock(), on=ConnectionError), fn)
    assert fn.calls == 1
    fn = FailsThenWorks(1, error=ValueError)
    assert side.through(policy(FakeClock(), on=(ConnectionError, ValueError)), fn) == "ok"


def test_backoff_is_full_jitter_capped() -> None:
    p = retry(backoff=0.5, max_backoff=3.0, rng=random.Random(1))
    for attempt in range(1, 10):
        ceiling = min(3.0, 0.5 * 2 ** (attempt - 1))
        delays = [p.delay(attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # the whole range is used
        assert min(delays) < ceiling * 0.2
    exact = retry(backoff=0.5, max_backoff=3.0, jitter=False)
    assert [exact.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_deadline_stops_retrying(side: Side) -> None:
    clock, listeners, recorder = FakeClock(), Listeners(), EventRecorder()
    listeners.add(recorder)
    fn = FailsThenWorks(100)
    p = policy(
        clock, listeners, attempts=100, deadline=2.0, backoff=0.5, max_backoff=0.5, jitter=False
    )
    with pytest.raises(ConnectionError):
        side.through(p, fn)
    assert fn.calls == 4  # at 0, 0.5, 1.0, 1.5; a fifth would start at the deadline
    assert recorder.of_type(RetryGaveUp)[0].reason == "deadline"


def test_an_enclosing_deadline_is_honoured() -> None:
    clock = FakeClock()
    fn = FailsThenWorks(100)
    p = policy(clock, attempts=100, backoff=1.0, max_backoff=1.0, jitter=False)
    with deadline(2.5, clock=clock), pytest.raises(ConnectionError):
        p.call(fn)
    assert fn.calls == 3  # 0, 1, 2: the next pause would pass the deadline


def test_budget_limits_retries_to_a_share_of_calls(side: Side) -> None:
    clock, listeners, recorder = FakeClock(), Listeners(), EventRecorder()
    listeners.add(recorder)
    budget = RetryBudget(ratio=0.1, min_per_second=0, capacity=5, clock=clock)
    p = policy(clock, listeners, attempts=3, budget=budget, backoff=0)
    calls = 0
    for _ in range(100):  # a dependency that is down: every call fails
        fn = FailsThenWorks(10)
        with pytest.raises(ConnectionError):
            side.through(p, fn)
        calls += fn.calls
    retries = calls - 100
    assert retries <= 10  # 10% of 100 calls
    assert retries >= 9
    assert {e.reason for e in recorder.of_type(RetryGaveUp)} >= {"budget"}


def test_budget_refills_over_time() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.0, min_per_second=2, capacity=3, clock=clock)
    assert [budget.try_withdraw() for _ in range(3)] == [True, True, False]  # starts with 1 s
    clock.advance(10)
    assert [budget.try_withdraw() for _ in range(4)] == [True, True, True, False]


def test_deadline_exceeded_is_retried_by_default() -> None:
    fn = FailsThenWorks(1, error=DeadlineExceeded)  # type: ignore[arg-type]

    def call() -> str:
        if fn.calls == 0:
            fn.calls += 1
            raise DeadlineExceeded(1.0)
        return "ok"

    assert policy(FakeClock()).call(call) == "ok"


def test_decorator_forms_keep_signature() -> None:
    @retry
    def plain(a: int) -> int:
        return a

    @retry(attempts=2)
    async def coro(a: int) -> int:
        return a

    assert plain(3) == 3
    assert inspect.iscoroutinefunction(coro)
    assert asyncio.run(coro(4)) == 4
    assert list(inspect.signature(plain).parameters) == ["a"]
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        retry(flaky, attempts=2, backoff=0)()  # type: ignore[call-overload]
    assert len(calls) == 2  # the options apply to the function given directly too


def test_the_signature_of_retry_shows_its_options() -> None:
    options = inspect.signature(retry).parameters
    assert {"on", "attempts", "deadline", "backoff", "max_backoff", "budget"} <= set(options)
    assert options["attempts"].default == 3


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("attempts", 0),
        ("on", "ValueError"),
        ("on", ()),
        ("deadline", 0),
        ("backoff", -1),
        ("max_backoff", 0.01),
        ("budget", 3),
    ],
)
def test_bad_configuration(option: str, value: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        retry(**{option: value})  # type: ignore[call-overload]
    assert info.value.parameter == option


@pytest.mark.parametrize("option", ["ratio", "min_per_second", "capacity"])
def test_bad_budget(option: str) -> None:
    with pytest.raises(ConfigurationError):
        RetryBudget(**{option: -1})  # type: ignore[arg-type]
