"""Type-level checks of the resilience decorators, run by mypy --strict, never executed."""

from __future__ import annotations

from collections.abc import Awaitable

from typing_extensions import assert_type

from scalepatterns import CircuitOpen
from scalepatterns.resilience import (
    CircuitBreaker,
    EndpointStats,
    Fallback,
    LoadBalancer,
    Pipeline,
    Retry,
    Timeout,
    fallback,
    pipeline,
    resilient,
    retry,
    timeout,
)


def fetch(user: int, *, fresh: bool = False) -> str:
    return str(user)


async def afetch(user: int) -> bytes:
    return b""


assert_type(retry(fetch)(1, fresh=True), str)
assert_type(retry(attempts=3), Retry)
assert_type(retry(attempts=3)(fetch)(1, fresh=True), str)
assert_type(retry(attempts=3)(afetch)(1), Awaitable[bytes])
assert_type(CircuitBreaker(name="x")(fetch)(1), str)
assert_type(CircuitBreaker(name="x")(afetch)(1), Awaitable[bytes])
assert_type(CircuitBreaker(name="x").call(fetch, 1, fresh=False), str)
assert_type(timeout(1.0), Timeout)
assert_type(timeout(1.0)(fetch)(2), str)
assert_type(fallback("none"), Fallback[str])
assert_type(fallback("none")(fetch)(1), str)
assert_type(pipeline(retry=2), Pipeline)
assert_type(resilient(timeout=1.0)(fetch)(1), str)
assert_type(resilient(timeout=1.0)(afetch)(1), Awaitable[bytes])
assert_type(CircuitOpen("x", 1.0).retry_after, float)

lb = LoadBalancer(["a", "b"])
assert_type(lb, LoadBalancer[str])
with lb.pick() as endpoint:
    assert_type(endpoint, str)
assert_type(lb.stats()["a"], EndpointStats)
retry(fetch)("1")  # type: ignore[arg-type]
