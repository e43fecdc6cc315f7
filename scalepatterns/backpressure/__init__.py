"""Backpressure: rate limits, concurrency limits, adaptive limits and queue-depth backpressure."""

from __future__ import annotations

from scalepatterns.backpressure.algorithms import GCRA, Algorithm, Decision, FixedWindow, SlidingWindow
from scalepatterns.backpressure.errors import BulkheadFull
from scalepatterns.backpressure.ratelimiter import RateLimiter
from scalepatterns.backpressure.rates import Rate, parse_rate

__all__ = [
    "GCRA",
    "Algorithm",
    "BulkheadFull",
    "Decision",
    "FixedWindow",
    "Rate",
    "RateLimiter",
    "SlidingWindow",
    "parse_rate",
]
