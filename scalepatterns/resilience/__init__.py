"""Resilience: retry, circuit breaker, timeout, fallback, client-side load balancing.

Each policy works on ``def`` and ``async def`` functions, emits events and has a
readable state; `resilient(...)` / `pipeline(...)` stacks them in a documented order.
See ``docs/resilience.md`` for the guide.
"""

from __future__ import annotations

from scalepatterns.resilience.balancer import EndpointStats, LoadBalancer
from scalepatterns.resilience.breaker import CircuitBreaker
from scalepatterns.resilience.breaker_core import BreakerCore, BreakerPolicy
from scalepatterns.resilience.compose import Pipeline, pipeline, resilient
from scalepatterns.resilience.errors import NoHealthyEndpoint
from scalepatterns.resilience.events import (
    BreakerClosed,
    BreakerHalfOpened,
    BreakerOpened,
    BreakerRejected,
    EndpointEjected,
    EndpointReadmitted,
    FallbackUsed,
    RetryAttempt,
    RetryGaveUp,
    RetryScheduled,
    TimeoutExpired,
)
from scalepatterns.resilience.fallback import Fallback, fallback
from scalepatterns.resilience.protocols import (
    AsyncBulkhead,
    Bulkhead,
    Limiter,
    LimiterDecision,
    SharedBreakerState,
)
from scalepatterns.resilience.retry import Retry, RetryBudget, retry
from scalepatterns.resilience.shared_state import MemoryBreakerState, RedisBreakerState
from scalepatterns.resilience.strategies import (
    ConsistentHash,
    LeastConnections,
    PowerOfTwoChoices,
    RoundRobin,
    WeightedRoundRobin,
)
from scalepatterns.resilience.timeout import Timeout, deadline, remaining, timeout

__all__ = [
    "AsyncBulkhead",
    "BreakerClosed",
    "BreakerCore",
    "BreakerHalfOpened",
    "BreakerOpened",
    "BreakerPolicy",
    "BreakerRejected",
    "Bulkhead",
    "CircuitBreaker",
    "ConsistentHash",
    "EndpointEjected",
    "EndpointReadmitted",
    "EndpointStats",
    "Fallback",
    "FallbackUsed",
    "LeastConnections",
    "Limiter",
    "LimiterDecision",
    "LoadBalancer",
    "MemoryBreakerState",
    "NoHealthyEndpoint",
    "Pipeline",
    "PowerOfTwoChoices",
    "RedisBreakerState",
    "Retry",
    "RetryAttempt",
    "RetryBudget",
    "RetryGaveUp",
    "RetryScheduled",
    "RoundRobin",
    "SharedBreakerState",
    "Timeout",
    "TimeoutExpired",
    "WeightedRoundRobin",
    "deadline",
    "fallback",
    "pipeline",
    "remaining",
    "resilient",
    "retry",
    "timeout",
]
