"""`retry(...)`: a typed layer over tenacity with safe defaults, and `RetryBudget`.

Defaults are the ones that do no harm at scale: exponential backoff with full jitter
(delays drawn from ``uniform(0, min(max_backoff, backoff * 2**(n-1)))``), a cap, a small
number of attempts, an optional overall deadline, and retrying **only** the exceptions
named in `on`. A `RetryBudget` shared by many calls lets retries be at most a set share
of calls, so a struggling dependency is not hit by a retry storm.

The first attempt runs inline (no tenacity object is built for a call that succeeds);
a failure hands over to tenacity's `Retrying` / `AsyncRetrying` loop.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, overload

import tenacity

from scalepatterns._checks import exception_types, seconds
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.resilience._callables import decorate, name_of
from scalepatterns.resilience.events import RetryAttempt, RetryGaveUp, RetryScheduled
from scalepatterns.resilience.timeout import remaining

__all__ = ["Retry", "RetryBudget", "retry"]

P = ParamSpec("P")
R = TypeVar("R")

ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


class RetryBudget:
    """Retries allowed as a share of calls, token-bucket style (Finagle's retry budget).

    Every call deposits `ratio` tokens; every retry withdraws one. Besides that,
    `min_per_second` tokens flow in per second so a quiet service may still retry now
    and then. The balance starts at one second's worth of `min_per_second` and never
    exceeds `capacity`. Thread-safe; share one budget between every call to the same
    dependency.

    Args:
        ratio: retries per call allowed over time (0.2: at most one retry per 5 calls).
        min_per_second: retries per second allowed regardless of traffic.
        capacity: most tokens saved up (the largest burst of retries).
        clock: time source.

    Example:

    ```python
    from scalepatterns.clock import FakeClock
    from scalepatterns.resilience import RetryBudget

    budget = RetryBudget(ratio=0.5, min_per_second=0, capacity=10, clock=FakeClock())
    for _ in range(4):
        budget.deposit()          # four calls...
    assert [budget.try_withdraw() for _ in range(3)] == [True, True, False]  # ...two retries
    ```
    """

    def __init__(
        self,
        ratio: float = 0.2,
        *,
        min_per_second: float = 1.0,
        capacity: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
            raise ConfigurationError("ratio", ratio, "a share of calls between 0 and 1")
        if not isinstance(min_per_second, (int, float)) or min_per_second < 0:
            raise ConfigurationError("min_per_second", min_per_second, "retries per second >= 0")
        if not isinstance(capacity, (int, float)) or capacity < 1:
            raise ConfigurationError("capacity", capacity, "a number of tokens >= 1")
        self.ratio = float(ratio)
        self.min_per_second = float(min_per_second)
        self.capacity = float(capacity)
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = min(self.capacity, self.min_per_second)
        self._refilled_at = clock.monotonic()

    @property
    def tokens(self) -> float:
        """The current balance (retries available now)."""
        with self._lock:
            self._refill()
            return self._tokens

    def deposit(self) -> None:
        """Count one call (adds `ratio` tokens)."""
        with self._lock:
            self._tokens = min(self.capacity, self._tokens + self.ratio)

    def _refill(self) -> None:
        now = self._clock.monotonic()
        if self.min_per_second and now > self._refilled_at:
            gained = (now - self._refilled_at) * self.min_per_second
            self._tokens = min(self.capacity, self._tokens + gained)
        self._refilled_at = now

    def try_withdraw(self) -> bool:
        """Take one retry token; False (and nothing taken) if the budget is spent."""
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False

    def __repr__(self) -> str:
        return f"RetryBudget(ratio={self.ratio}, tokens={self._tokens:.2f})"


class Retry:
    """A retry policy; decorate with it (``@policy``) or call through it (``policy.call``).

    Build it with `retry(...)`, which documents the arguments.
    """

    def __init__(
        self,
        *,
        on: ExceptionTypes = (ConnectionError, TimeoutError),
        attempts: int = 3,
        deadline: float | None = None,
        backoff: float = 0.1,
        max_backoff: float = 10.0,
        jitter: bool = True,
        budget: RetryBudget | None = None,
        name: str | None = None,
        rng: random.Random | None = None,
        clock: Clock = SYSTEM_CLOCK,
        listeners: Listeners | None = None,
    ) -> None:
        types = exception_types("on", on)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise ConfigurationError("attempts", attempts, "an integer >= 1 (1: no retry)")
        seconds("deadline", deadline, allow_none=True, positive=True)
        seconds("backoff", backoff)
        seconds("max_backoff", max_backoff)
        if max_backoff < backoff:
            raise ConfigurationError("max_backoff", max_backoff, f"seconds >= backoff={backoff}")
        if budget is not None and not isinstance(budget, RetryBudget):
            raise ConfigurationError("budget", budget, "a RetryBudget or None")
        self.on: tuple[type[BaseException], ...] = types
        self.attempts = attempts
        self.deadline = None if deadline is None else float(deadline)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.jitter = jitter
        self.budget = budget
        self.name = name
        self._rng = rng or random.Random()
        self._clock = clock
        self._listeners = default_listeners if listeners is None else listeners

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt number `attempt` (counting from 1)."""
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        return self._rng.uniform(0.0, ceiling) if self.jitter else ceiling

    # ------------------------------------------------------------- tenacity
    def _tenacity_kwargs(self, source: str, started: float) -> dict[str, Any]:
        planned: dict[int, float] = {}
        listeners = self._listeners
        clock = self._clock

        def plan(attempt: int) -> float:
            if attempt not in planned:
                planned[attempt] = self.delay(attempt)
            return planned[attempt]

        def wait(state: tenacity.RetryCallState) -> float:
            return plan(state.attempt_number)

        def stop(state: tenacity.RetryCallState) -> bool:
            attempt = state.attempt_number
            pause = plan(attempt)
            left = remaining()
            if attempt >= self.attempts:
                reason = "attempts"
            elif (
                self.deadline is not None and clock.monotonic() - started + pause >= self.deadline
            ) or (left is not None and left <= pause):
                reason = "deadline"
            elif self.budget is not None and not self.budget.try_withdraw():
                reason = "budget"
            else:
                return False
            if listeners.active:
                error = state.outcome.exception() if state.outcome else None
                listeners.emit(
                    RetryGaveUp(source, attempts=attempt, reason=reason, error=type(error).__name__)
                )
            return True

        def before_sleep(state: tenacity.RetryCallState) -> None:
            if listeners.active:
                error = state.outcome.exception() if state.outcome else None
                listeners.emit(
                    RetryScheduled(
                        source,
                        attempt=state.attempt_number,
                        delay=plan(state.attempt_number),
                        error=type(error).__name__,
                    )
                )

        return {
            "stop": stop,
            "wait": wait,
            "retry": tenacity.retry_if_exception_type(self.on),
            "before_sleep": before_sleep,
            "reraise": True,
        }

    def _start(self, fn: Callable[..., Any]) -> tuple[str, float]:
        """The first attempt of a call of `fn` begins: its source name and start time."""
        source = self.name or name_of(fn)
        if self.budget is not None:
            self.budget.deposit()
        if self._listeners.active:
            self._listeners.emit(RetryAttempt(source, attempt=1))
        return source, self._clock.monotonic()

    def _replaying(
        self, source: str, first: BaseException, fn: Callable[..., R]
    ) -> Callable[..., R]:
        """`fn` for tenacity, whose first attempt re-raises `first` (the call already made
        and failed) instead of calling again; emits the attempt events.
        """
        pending = [first]
        listeners = self._listeners
        count = [1]

        def attempt(*args: Any, **kwargs: Any) -> R:
            if pending:
                raise pending.pop()
            count[0] += 1
            if listeners.active:
                listeners.emit(RetryAttempt(source, attempt=count[0]))
            return fn(*args, **kwargs)

        return attempt

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call `fn`, retrying the exceptions in `on` as configured."""
        source, started = self._start(fn)
        try:
            return fn(*args, **kwargs)
        except self.on as exc:
            attempt = self._replaying(source, exc, fn)
        retrying = tenacity.Retrying(
            sleep=self._clock.sleep, **self._tenacity_kwargs(source, started)
        )
        return retrying(attempt, *args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await `fn`, retrying the exceptions in `on` as configured."""
        source, started = self._start(fn)
        try:
            return await fn(*args, **kwargs)
        except self.on as exc:
            replaying = self._replaying(source, exc, fn)

        async def attempt(*args: Any, **kwargs: Any) -> R:
            # a coroutine function: AsyncRetrying calls a plain one without awaiting it
            return await replaying(*args, **kwargs)

        retrying = tenacity.AsyncRetrying(
            sleep=self._clock.asleep, **self._tenacity_kwargs(source, started)
        )
        return await retrying(attempt, *args, **kwargs)

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate `fn` (``def`` or ``async def``) with this policy."""
        return decorate(fn, self.call, self.acall)

    def __repr__(self) -> str:
        names = ", ".join(t.__name__ for t in self.on)
        return f"Retry(on=({names}), attempts={self.attempts}, deadline={self.deadline})"


@overload
def retry(fn: Callable[P, Awaitable[R]], /) -> Callable[P, Awaitable[R]]: ...
@overload
def retry(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def retry(
    *,
    on: ExceptionTypes = ...,
    attempts: int = ...,
    deadline: float | None = ...,
    backoff: float = ...,
    max_backoff: float = ...,
    jitter: bool = ...,
    budget: RetryBudget | None = ...,
    name: str | None = ...,
    rng: random.Random | None = ...,
    clock: Clock = ...,
    listeners: Listeners | None = ...,
) -> Retry: ...
def retry(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    on: ExceptionTypes = (ConnectionError, TimeoutError),
    attempts: int = 3,
    deadline: float | None = None,
    backoff: float = 0.1,
    max_backoff: float = 10.0,
    jitter: bool = True,
    budget: RetryBudget | None = None,
    name: str | None = None,
    rng: random.Random | None = None,
    clock: Clock = SYSTEM_CLOCK,
    listeners: Listeners | None = None,
) -> Any:
    """A retry policy with safe defaults; use as ``@retry``, ``@retry(...)`` or a value.

    Args:
        on: the exception types to retry (default: `ConnectionError`, `TimeoutError`,
            which includes `DeadlineExceeded`). Anything else is raised at once.
        attempts: most attempts in all, the first included (default 3).
        deadline: seconds from the first attempt after which no new attempt starts
            (None: no limit besides `attempts`). A deadline set by `timeout` in an
            outer scope is honoured as well.
        backoff: the first delay's ceiling, in seconds; doubles after each attempt.
        max_backoff: the cap on a delay's ceiling.
        jitter: full jitter (a delay drawn between 0 and its ceiling); False waits the
            ceiling itself.
        budget: a `RetryBudget` shared between calls; no retry when it is spent.
        name: the `source` of events (default: the function's qualified name).
        rng: random source for jitter (seed it in tests).
        clock: time source; its `sleep`/`asleep` does the waiting.
        listeners: event registry.

    When retrying stops, the last exception is re-raised (never a tenacity wrapper).

    Example:

    ```python
    from scalepatterns.clock import FakeClock
    from scalepatterns.resilience import retry

    calls = []

    @retry(on=ConnectionError, attempts=3, clock=FakeClock())
    def fetch() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("flaky")
        return "ok"

    assert fetch() == "ok" and len(calls) == 3
    ```
    """
    policy = Retry(
        on=on,
        attempts=attempts,
        deadline=deadline,
        backoff=backoff,
        max_backoff=max_backoff,
        jitter=jitter,
        budget=budget,
        name=name,
        rng=rng,
        clock=clock,
        listeners=listeners,
    )
    return policy if fn is None else policy(fn)
