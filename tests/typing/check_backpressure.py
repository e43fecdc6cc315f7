"""Type-level checks of the backpressure block, run by mypy --strict, never executed."""

from __future__ import annotations

from typing_extensions import assert_type

from scalepatterns import AdaptiveLimiter, ConcurrencyLimiter, RateLimiter, advise_workers
from scalepatterns.backpressure import Decision, Permit, WorkerAdvice

limiter = RateLimiter("10/second")
assert_type(limiter.acquire("k"), Decision)
assert_type(limiter.acquire("k").retry_after, float)


@limiter.limit(key="k")
def fetch(user: int, *, page: int = 1) -> str:
    return f"{user}:{page}"


@limiter.limit(key=lambda user, **_: str(user))
async def afetch(user: int) -> bytes:
    return b""


assert_type(fetch(1, page=2), str)


async def use_async() -> None:
    assert_type(await afetch(1), bytes)
    assert_type(await awork(3), int)


bulkhead = ConcurrencyLimiter(4)


@bulkhead
def work(x: int) -> float:
    return x / 2


@bulkhead
async def awork(x: int) -> int:
    return x


assert_type(work(3), float)
assert_type(AdaptiveLimiter().acquire(), Permit)
assert_type(advise_workers(1.0, 1.0, 1.0), WorkerAdvice)
