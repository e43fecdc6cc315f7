"""Chapter 5: backpressure: rate limits per user, a bulkhead, an adaptive limit, queue depth."""

from __future__ import annotations

import heapq

from scalepatterns import (
    AdaptiveLimiter,
    BulkheadFull,
    ConcurrencyLimiter,
    FakeClock,
    QueueBackpressure,
    QueueFull,
    RateLimiter,
    advise_workers,
)

TITLE = "Backpressure: rate limits, bulkheads, adaptive limits, queue depth"


def run() -> None:
    clock = FakeClock()
    limiter = RateLimiter("5/second", clock=clock)  # GCRA, in this process
    ada = [limiter.acquire("user:ada").allowed for _ in range(8)]
    bob = limiter.acquire("user:bob").allowed
    refused = limiter.acquire("user:ada")
    print(
        f"   rate limit 5/s (memory backend): ada allowed {sum(ada)} of 8 at once, "
        f"bob unaffected ({bob}); ada may retry in {refused.retry_after:.1f}s"
    )

    bulkhead = ConcurrencyLimiter(2, name="reports")
    refusals = 0
    with bulkhead, bulkhead:
        try:
            with bulkhead:
                pass
        except BulkheadFull:
            refusals += 1
    print(f"   bulkhead of 2: the third concurrent call was refused ({refusals} refusal)")

    adaptive = AdaptiveLimiter("vegas", initial_limit=5, clock=clock)
    knee, pending, seq = 30, [], 0
    for _ in range(3000):  # a dependency whose latency rises past 30 calls in flight
        while (permit := adaptive.try_acquire()) is not None:
            seq += 1
            latency = 0.01 * max(1.0, adaptive.inflight / knee)
            heapq.heappush(pending, (clock.monotonic() + latency, seq, permit))
        done_at, _, permit = heapq.heappop(pending)
        clock.advance(max(0.0, done_at - clock.monotonic()))
        permit.success()
    print(f"   adaptive limit (Vegas): found {adaptive.limit}, the dependency's knee is {knee}")

    depth = [0]
    gate = QueueBackpressure(lambda: depth[0], high=100, low=20, mode="reject", queue="jobs")
    try:
        for _ in range(150):
            gate.admit()
            depth[0] += 1
    except QueueFull:
        pass
    print(f"   queue depth: the producer was told to back off at depth {depth[0]} (high 100)")

    advice = advise_workers(arrival_rate=200, service_time=0.05, target_wait=0.005)
    print(
        f"   worker advisor: 200 msg/s x 50 ms needs {advice.workers} workers to keep the "
        f"mean wait under 5 ms (expected {advice.expected_wait * 1000:.1f} ms)"
    )
