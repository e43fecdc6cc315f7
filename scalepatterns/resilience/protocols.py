"""The small interfaces the composition layer needs from other blocks.

`resilient(limiter=..., bulkhead=...)` accepts any object with these shapes, so the
backpressure block's limiters and bulkheads (or your own) plug in without an import.
"""

from __future__ import annotations

from collections.abc import Awaitable
from types import TracebackType
from typing import Protocol, runtime_checkable

__all__ = ["AsyncBulkhead", "Bulkhead", "Limiter", "LimiterDecision", "SharedBreakerState"]


class LimiterDecision(Protocol):
    """What a rate limiter answers: allowed or not, and when to try again."""

    @property
    def allowed(self) -> bool: ...

    @property
    def retry_after(self) -> float: ...


@runtime_checkable
class Limiter(Protocol):
    """A rate limiter (such as `scalepatterns.RateLimiter`): `acquire(key, cost)` answers a
    `LimiterDecision`, or an awaitable of one."""

    def acquire(self, key: str, cost: int = 1) -> LimiterDecision | Awaitable[LimiterDecision]: ...


@runtime_checkable
class Bulkhead(Protocol):
    """A concurrency limit used as ``with bulkhead:`` around a sync call."""

    def __enter__(self) -> object: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...


@runtime_checkable
class AsyncBulkhead(Protocol):
    """A concurrency limit used as ``async with bulkhead:`` around an `async def` call."""

    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...


class SharedBreakerState(Protocol):
    """Where a fleet of breakers with the same name publishes "open until".

    Times are wall-clock seconds (`time.time()`), since monotonic clocks differ between
    processes. `RedisBreakerState` is the built-in implementation.
    """

    def publish_open(self, name: str, until: float) -> None:
        """Record that breaker `name` is open until wall time `until`."""
        ...

    def read_open(self, name: str) -> float | None:
        """Wall time until which breaker `name` is open, or None if it is not."""
        ...

    def clear(self, name: str) -> None:
        """Forget that breaker `name` is open (a trial call succeeded)."""
        ...
