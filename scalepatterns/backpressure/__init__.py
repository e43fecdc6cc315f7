"""Backpressure: rate limits, concurrency limits, adaptive limits and queue-depth backpressure.

- `RateLimiter`: per-key rate limits (GCRA, sliding or fixed window), in-process or shared
  through Redis with one Lua script per decision.
- `ConcurrencyLimiter`: a bulkhead (``with``/``async with``/decorator).
- `AdaptiveLimiter`: a concurrency limit that learns what a dependency can take (Vegas,
  gradient, AIMD), shedding low-priority work first.
- `QueueBackpressure`: producers blocked, refused or shed while a queue is too deep.
- `advise_workers`: how many workers keep a queue's wait under a target (Erlang C).
"""

from __future__ import annotations

from scalepatterns.backpressure.adaptive import (
    AIMD,
    AdaptiveLimiter,
    Gradient,
    LimitAlgorithm,
    Permit,
    Vegas,
)
from scalepatterns.backpressure.advisor import WorkerAdvice, advise_workers
from scalepatterns.backpressure.algorithms import (
    GCRA,
    Algorithm,
    Decision,
    FixedWindow,
    SlidingWindow,
)
from scalepatterns.backpressure.concurrency import ConcurrencyLimiter
from scalepatterns.backpressure.errors import BulkheadFull
from scalepatterns.backpressure.events import (
    BulkheadRejected,
    LimitChanged,
    LimiterBackendFailed,
    QueueReleased,
    QueueThrottled,
    RateAllowed,
    RateRejected,
    RateWaited,
    WorkShed,
)
from scalepatterns.backpressure.queue_depth import (
    QueueBackpressure,
    RabbitMQQueueDepth,
    RedisListDepth,
    RedisStreamDepth,
)
from scalepatterns.backpressure.ratelimiter import RateLimiter
from scalepatterns.backpressure.rates import Rate, parse_rate

__all__ = [
    "AIMD",
    "AdaptiveLimiter",
    "Algorithm",
    "BulkheadFull",
    "BulkheadRejected",
    "ConcurrencyLimiter",
    "Decision",
    "FixedWindow",
    "GCRA",
    "Gradient",
    "LimitAlgorithm",
    "LimitChanged",
    "LimiterBackendFailed",
    "Permit",
    "QueueBackpressure",
    "QueueReleased",
    "QueueThrottled",
    "RabbitMQQueueDepth",
    "Rate",
    "RateAllowed",
    "RateLimiter",
    "RateRejected",
    "RateWaited",
    "RedisListDepth",
    "RedisStreamDepth",
    "SlidingWindow",
    "Vegas",
    "WorkShed",
    "WorkerAdvice",
    "advise_workers",
    "parse_rate",
]
