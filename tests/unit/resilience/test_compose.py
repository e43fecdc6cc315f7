"""resilient(...) / pipeline(...): the order of the policies, with fake limiters and bulkheads."""

from __future__ import annotations

import asyncio
import inspect
import random
from dataclasses import dataclass
from types import TracebackType

import pytest

from scalepatterns import (
    CircuitOpen,
    ConfigurationError,
    DeadlineExceeded,
    FakeClock,
    Listeners,
    RateLimited,
)
from scalepatterns.resilience import (
    AsyncBulkhead,
    Bulkhead,
    CircuitBreaker,
    Limiter,
    fallback,
    pipeline,
    resilient,
    retry,
    timeout,
)

from .conftest import Side


@dataclass
class Verdict:
    allowed: bool
    retry_after: float


class FakeLimiter:
    """Allows `capacity` acquisitions, then refuses with retry_after 1.5."""

    def __init__(self, log: list[str], capacity: int = 100) -> None:
        self.log = log
        self.capacity = capacity
        self.keys: list[str] = []

    def acquire(self, key: str, cost: int = 1) -> Verdict:
        self.log.append("acquire")
        self.keys.append(key)
        self.capacity -= cost
        return Verdict(self.capacity >= 0, 0.0 if self.capacity >= 0 else 1.5)


class FakeBulkhead:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.inside = 0

    def __enter__(self) -> FakeBulkhead:
        self.log.append("enter")
        self.inside += 1
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.log.append("exit")
        self.inside -= 1

    async def __aenter__(self) -> FakeBulkhead:
        return self.__enter__()

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(t, e, tb)


class RecordingClock(FakeClock):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def sleep(self, seconds: float) -> None:
        self.log.append("backoff")
        super().sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        self.log.append("backoff")
        await super().asleep(seconds)


def test_fakes_satisfy_the_protocols() -> None:
    log: list[str] = []
    assert isinstance(FakeLimiter(log), Limiter)
    assert isinstance(FakeBulkhead(log), Bulkhead)
    assert isinstance(FakeBulkhead(log), AsyncBulkhead)


def test_each_retry_pays_the_limiter_and_backs_off_outside_the_bulkhead(side: Side) -> None:
    log: list[str] = []
    clock = RecordingClock(log)
    attempts = []

    def dependency() -> str:
        attempts.append(1)
        log.append("call")
        if len(attempts) < 3:
            raise ConnectionError
        return "ok"

    policies = pipeline(
        retry=retry(on=ConnectionError, attempts=3, clock=clock, listeners=Listeners()),
        limiter=FakeLimiter(log),
        limit_key="inventory",
        bulkhead=FakeBulkhead(log),
        breaker=CircuitBreaker(name="inv", clock=clock, listeners=Listeners()),
        timeout=timeout(5.0, mode="inline", clock=clock),
    )
    assert side.through(policies, dependency) == "ok"
    one = ["acquire", "enter", "call", "exit"]
    assert log == [*one, "backoff", *one, "backoff", *one]


def test_our_own_refusals_never_trip_the_breaker(side: Side) -> None:
    log: list[str] = []
    breaker = CircuitBreaker(name="dep", window=2, minimum_calls=2, listeners=Listeners())
    limiter = FakeLimiter(log, capacity=0)
    policies = pipeline(limiter=limiter, breaker=breaker)
    for _ in range(5):
        with pytest.raises(RateLimited) as info:
            side.through(policies, lambda: "never")
        assert info.value.retry_after == 1.5
    assert breaker.state == "closed"
    assert breaker.metrics()["calls"] == 0


def test_open_breaker_ends_retrying_and_fallback_answers(side: Side) -> None:
    clock = FakeClock()
    calls = []

    def down() -> str:
        calls.append(1)
        raise ConnectionError

    breaker = CircuitBreaker(
        name="dep", window=2, minimum_calls=2, clock=clock, listeners=Listeners()
    )
    policies = pipeline(
        retry=retry(on=ConnectionError, attempts=10, clock=clock, listeners=Listeners()),
        breaker=breaker,
        fallback=fallback(lambda exc: type(exc).__name__, listeners=Listeners()),
    )
    assert side.through(policies, down) == "CircuitOpen"
    assert len(calls) == 2  # the third attempt met the open breaker, which is not retried


def test_timeouts_count_as_breaker_failures(side: Side) -> None:
    clock = FakeClock()

    def slow() -> str:
        clock.advance(2.0)
        return "late"

    breaker = CircuitBreaker(
        name="dep", window=3, minimum_calls=3, clock=clock, listeners=Listeners()
    )
    policies = pipeline(breaker=breaker, timeout=timeout(1.0, mode="inline", clock=clock))
    for _ in range(3):
        with pytest.raises(DeadlineExceeded):
            side.through(policies, slow)
    with pytest.raises(CircuitOpen):
        side.through(policies, slow)


def test_resilient_decorator_keeps_signature_and_kind() -> None:
    @resilient(retry=2, timeout=5.0)
    def get(item: int, *, fresh: bool = False) -> int:
        return item

    @resilient(retry=2, timeout=5.0, bulkhead=FakeBulkhead([]), limiter=FakeLimiter([]))
    async def aget(item: int) -> int:
        await asyncio.sleep(0)
        return item

    assert get(3) == 3
    assert list(inspect.signature(get).parameters) == ["item", "fresh"]
    assert inspect.iscoroutinefunction(aget)
    assert asyncio.run(aget(4)) == 4
    assert repr(pipeline(retry=2, timeout=1.0)) == "Pipeline(retry -> timeout)"


def test_empty_pipeline_returns_the_function_unchanged() -> None:
    def get(item: int) -> int:
        return item

    decorated = pipeline()(get)
    assert decorated is get
    assert not hasattr(get, "__wrapped__")  # no self-reference: signature() would loop
    assert list(inspect.signature(decorated).parameters) == ["item"]


def test_async_limiter_is_awaited() -> None:
    class AsyncLimiter:
        async def acquire(self, key: str, cost: int = 1) -> Verdict:
            return Verdict(False, 2.0)

    @resilient(limiter=AsyncLimiter())
    async def work() -> None:
        raise AssertionError("not called")

    with pytest.raises(RateLimited) as info:
        asyncio.run(work())
    assert info.value.key.endswith("work")
    with pytest.raises(TypeError):
        resilient(limiter=AsyncLimiter())(lambda: None)()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("timeout", "1s"),
        ("retry", "yes"),
        ("breaker", object()),
        ("limiter", object()),
        ("bulkhead", object()),
        ("fallback", 42),
    ],
)
def test_bad_configuration(option: str, value: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        pipeline(**{option: value})  # type: ignore[arg-type]
    assert info.value.parameter == option


def test_jitter_source_is_seedable() -> None:
    a = retry(rng=random.Random(3))
    b = retry(rng=random.Random(3))
    assert [a.delay(n) for n in range(1, 5)] == [b.delay(n) for n in range(1, 5)]


def test_rate_limiter_on_an_async_redis_client_limits_an_async_function() -> None:
    """`RateLimiter(redis=<redis.asyncio client>)` answers through `aacquire` only (its
    `acquire` raises TypeError); the async pipeline must use it."""
    from types import SimpleNamespace

    from scalepatterns import RateLimiter as ScaleRateLimiter

    class AsyncRedis:
        """Answers the limiter's script as Redis would for a 2-per-minute key."""

        def __init__(self) -> None:
            self.calls = 0

        def register_script(self, source: str) -> object:
            return SimpleNamespace(sha="0" * 40)

        async def execute_command(self, *args: object) -> None:
            raise AssertionError("not used")

        async def evalsha(self, *args: object) -> bytes:
            self.calls += 1
            return b"1 1 0 30" if self.calls <= 2 else b"0 0 30 30"

    limiter = ScaleRateLimiter("2/minute", redis=AsyncRedis())

    @resilient(limiter=limiter, limit_key="quotes")
    async def quote() -> str:
        return "ok"

    async def main() -> list[str]:
        results = []
        for _ in range(3):
            try:
                results.append(await quote())
            except RateLimited:
                results.append("limited")
        return results

    assert asyncio.run(main()) == ["ok", "ok", "limited"]
