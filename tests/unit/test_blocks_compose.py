"""Blocks built separately work together through their public interfaces."""

from __future__ import annotations

import asyncio
import threading

import pytest

from scalepatterns import (
    BulkheadFull,
    CircuitBreaker,
    ConcurrencyLimiter,
    FakeClock,
    RateLimited,
    RateLimiter,
    resilient,
)


def test_resilient_uses_the_backpressure_rate_limiter() -> None:
    clock = FakeClock()
    limiter = RateLimiter("2/second", burst=2, clock=clock)
    calls: list[int] = []

    @resilient(
        limiter=limiter, limit_key="inventory", breaker=CircuitBreaker(name="inv", clock=clock)
    )
    def stock(sku: int) -> int:
        calls.append(sku)
        return sku * 10

    assert [stock(1), stock(2)] == [10, 20]
    with pytest.raises(RateLimited) as info:
        stock(3)
    assert info.value.key == "inventory"
    assert info.value.retry_after > 0
    assert calls == [1, 2], "a refused call never reaches the function"
    clock.advance(info.value.retry_after)
    assert stock(4) == 40


def test_resilient_uses_the_backpressure_bulkhead_sync_and_async() -> None:
    bulkhead = ConcurrencyLimiter(1, max_waiting=0)
    entered, release = threading.Event(), threading.Event()

    @resilient(bulkhead=bulkhead)
    def slow() -> str:
        entered.set()
        release.wait(10)
        return "done"

    worker = threading.Thread(target=slow)
    worker.start()
    assert entered.wait(10)
    with pytest.raises(BulkheadFull):
        slow()
    release.set()
    worker.join()

    @resilient(bulkhead=bulkhead)
    async def quick() -> str:
        return "async done"

    assert asyncio.run(quick()) == "async done"
    assert slow() == "done"
