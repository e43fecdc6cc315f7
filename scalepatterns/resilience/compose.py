"""`resilient(...)` / `pipeline(...)`: stack policies on a function in a fixed, sane order.

Outermost first::

    fallback -> retry -> rate limiter -> bulkhead -> circuit breaker -> timeout -> call

Why this order (resilience4j and Polly agree on the core of it; where they differ we
chose what keeps the breaker honest):

- **fallback outermost**: it answers for every failure below, including `CircuitOpen`,
  `RateLimited` and a retry that gave up (Polly: fallback wraps everything).
- **retry outside the breaker**: each attempt is one call the breaker counts, and once
  the breaker opens, `CircuitOpen` (not retried unless you name it in `on`) ends the
  retrying instead of hammering a dependency known to be down (resilience4j:
  ``Retry(CircuitBreaker(...))``, Polly: retry wraps the breaker).
- **retry outside the limiter and the bulkhead**: every retry pays for a rate-limit
  token like any call (retries are not free), and a call waiting out its backoff holds
  no bulkhead slot.
- **limiter and bulkhead outside the breaker**: our own refusals (`RateLimited`, a full
  bulkhead) are not the dependency's failures and must not trip the breaker. (This is
  where we depart from resilience4j's default, which records them as failures.)
- **breaker outside the timeout**: a call that runs out of time counts as a failure, so
  a dependency that has become slow trips the breaker; and an open breaker refuses in
  microseconds without taking a timeout's worker thread.
- **timeout innermost**: the budget is per attempt; give the retry a `deadline` for
  the whole call (the timeout's deadline is also visible to nested calls).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, overload

from scalepatterns.errors import ConfigurationError, RateLimited
from scalepatterns.resilience._callables import is_coroutine_callable, name_of, refuse_awaitable
from scalepatterns.resilience.breaker import CircuitBreaker
from scalepatterns.resilience.fallback import Fallback
from scalepatterns.resilience.protocols import AsyncBulkhead, Bulkhead, Limiter, LimiterDecision
from scalepatterns.resilience.retry import Retry
from scalepatterns.resilience.timeout import Timeout

__all__ = ["Pipeline", "pipeline", "resilient"]

P = ParamSpec("P")
R = TypeVar("R")

ORDER = ("fallback", "retry", "limiter", "bulkhead", "breaker", "timeout")
"""The policies, outermost first."""


class Pipeline:
    """Policies stacked in the documented order; decorate with it or call through it.

    Build it with `pipeline(...)` or `resilient(...)`.
    """

    def __init__(
        self,
        *,
        timeout: Timeout | float | None = None,
        retry: Retry | int | None = None,
        breaker: CircuitBreaker | None = None,
        limiter: Limiter | None = None,
        limit_key: str | None = None,
        bulkhead: Bulkhead | AsyncBulkhead | None = None,
        fallback: Fallback[Any] | None = None,
    ) -> None:
        if timeout is not None and not isinstance(timeout, Timeout):
            if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
                raise ConfigurationError("timeout", timeout, "a Timeout, seconds, or None")
            timeout = Timeout(timeout)
        if retry is not None and not isinstance(retry, Retry):
            if not isinstance(retry, int) or isinstance(retry, bool):
                raise ConfigurationError("retry", retry, "a Retry, a number of attempts, or None")
            retry = Retry(attempts=retry)
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise ConfigurationError("breaker", breaker, "a CircuitBreaker or None")
        if limiter is not None and not callable(getattr(limiter, "acquire", None)):
            raise ConfigurationError("limiter", limiter, "an object with acquire(key, cost)")
        if bulkhead is not None and not (
            hasattr(bulkhead, "__enter__") or hasattr(bulkhead, "__aenter__")
        ):
            raise ConfigurationError("bulkhead", bulkhead, "a (async) context manager")
        if fallback is not None and not isinstance(fallback, Fallback):
            raise ConfigurationError("fallback", fallback, "a Fallback (from fallback(...))")
        self.timeout = timeout
        self.retry = retry
        self.breaker = breaker
        self.limiter = limiter
        self.limit_key = limit_key
        self.bulkhead = bulkhead
        self.fallback = fallback

    def _wrap(self, fn: Callable[..., Any], sync: bool) -> Callable[..., Any]:
        """Wrap `fn` in each configured policy, innermost (the end of `ORDER`) first."""
        method = "call" if sync else "acall"
        call: Callable[..., Any] = fn
        for name in reversed(ORDER):
            policy = getattr(self, name)
            if policy is None:
                continue
            if name == "limiter":
                limited = _limiter_sync if sync else _limiter_async
                call = limited(fn, policy, self.limit_key or name_of(fn), call)
            elif name == "bulkhead":
                call = (_bulkhead_sync if sync else _bulkhead_async)(fn, policy, call)
            else:
                call = (_step if sync else _astep)(fn, getattr(policy, method), call)
        return call

    def wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        """The composed sync callable (built once; no per-call branching on options)."""
        return self._wrap(fn, sync=True)

    def wrap_async(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """The composed async callable."""
        return self._wrap(fn, sync=False)

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call `fn` through every policy (composes on each call: decorate hot paths)."""
        return self.wrap_sync(fn)(*args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await `fn` through every policy."""
        return await self.wrap_async(fn)(*args, **kwargs)

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate `fn` (``def`` or ``async def``); an empty pipeline returns `fn` itself."""
        # Each step already carries fn's metadata (functools.wraps), so nothing to copy here.
        return self.wrap_async(fn) if is_coroutine_callable(fn) else self.wrap_sync(fn)

    def __repr__(self) -> str:
        used = [name for name in ORDER if getattr(self, name) is not None]
        return f"Pipeline({' -> '.join(used) or 'empty'})"


def _step(fn: Callable[..., Any], policy: Callable[..., Any], inner: Callable[..., Any]) -> Any:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        return policy(inner, *args, **kwargs)

    return run


def _astep(fn: Callable[..., Any], policy: Callable[..., Any], inner: Callable[..., Any]) -> Any:
    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await policy(inner, *args, **kwargs)

    return run


def _check(key: str, decision: LimiterDecision) -> None:
    if not decision.allowed:
        raise RateLimited(key, decision.retry_after)


def _limiter_sync(
    fn: Callable[..., Any], limiter: Limiter, key: str, inner: Callable[..., Any]
) -> Any:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        decision = refuse_awaitable(
            limiter.acquire(key, 1), "this limiter is async: decorate an `async def` function"
        )
        _check(key, decision)
        return inner(*args, **kwargs)

    return run


def _limiter_async(
    fn: Callable[..., Any], limiter: Limiter, key: str, inner: Callable[..., Any]
) -> Any:
    # A limiter with `aacquire` (scalepatterns' RateLimiter) may answer only there: on a
    # redis.asyncio client its `acquire` raises TypeError.
    aacquire = getattr(limiter, "aacquire", None)
    acquire = aacquire if callable(aacquire) else limiter.acquire

    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> Any:
        decision = acquire(key, 1)
        if inspect.isawaitable(decision):
            decision = await decision
        _check(key, decision)
        return await inner(*args, **kwargs)

    return run


def _bulkhead_sync(
    fn: Callable[..., Any], bulkhead: Bulkhead | AsyncBulkhead, inner: Callable[..., Any]
) -> Any:
    if not isinstance(bulkhead, Bulkhead):
        raise ConfigurationError("bulkhead", bulkhead, "a sync context manager for a sync function")

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with bulkhead:
            return inner(*args, **kwargs)

    return run


def _bulkhead_async(
    fn: Callable[..., Any], bulkhead: Bulkhead | AsyncBulkhead, inner: Callable[..., Any]
) -> Any:
    if isinstance(bulkhead, AsyncBulkhead):
        async_bulkhead = bulkhead

        @functools.wraps(fn)
        async def run(*args: Any, **kwargs: Any) -> Any:
            async with async_bulkhead:
                return await inner(*args, **kwargs)

        return run
    sync_bulkhead = bulkhead

    @functools.wraps(fn)
    async def run_sync_bulkhead(*args: Any, **kwargs: Any) -> Any:
        with sync_bulkhead:
            return await inner(*args, **kwargs)

    return run_sync_bulkhead


def pipeline(
    *,
    timeout: Timeout | float | None = None,
    retry: Retry | int | None = None,
    breaker: CircuitBreaker | None = None,
    limiter: Limiter | None = None,
    limit_key: str | None = None,
    bulkhead: Bulkhead | AsyncBulkhead | None = None,
    fallback: Fallback[Any] | None = None,
) -> Pipeline:
    """Stack policies in the documented order (see the module docs for the reasons).

    Args:
        timeout: a `Timeout`, or seconds (``timeout(seconds)``): the per-attempt budget.
        retry: a `Retry` (from `retry(...)`), or a number of attempts with the defaults.
        breaker: a `CircuitBreaker`.
        limiter: a rate limiter (``acquire(key, cost)`` answering ``allowed`` and
            ``retry_after``); a refusal raises `RateLimited`.
        limit_key: the limiter's key (default: the function's qualified name).
        bulkhead: a concurrency limit used as ``with``/``async with``.
        fallback: a `Fallback` (from `fallback(...)`).

    ```python
    from scalepatterns.clock import FakeClock
    from scalepatterns.resilience import CircuitBreaker, fallback, pipeline, retry

    clock = FakeClock()
    policies = pipeline(
        retry=retry(on=ConnectionError, attempts=2, clock=clock),
        breaker=CircuitBreaker(name="quotes", minimum_calls=2, window=2, clock=clock),
        fallback=fallback("cached quote", on=Exception),
    )

    def quote() -> str:
        raise ConnectionError("down")

    assert policies.call(quote) == "cached quote"     # retried once, then fell back
    assert policies.breaker is not None and policies.breaker.state == "open"
    ```
    """
    return Pipeline(
        timeout=timeout,
        retry=retry,
        breaker=breaker,
        limiter=limiter,
        limit_key=limit_key,
        bulkhead=bulkhead,
        fallback=fallback,
    )


resilient = pipeline
"""``@resilient(timeout=..., retry=..., breaker=..., ...)``: the same as `pipeline`, read as
a decorator."""
