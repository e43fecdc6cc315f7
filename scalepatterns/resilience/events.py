"""Events the resilience policies emit (see `scalepatterns.events` for listening).

`source` is always the policy's name (a breaker's or balancer's name, a retried
function's qualified name), never a user key or an endpoint's address with credentials.
"""

from __future__ import annotations

from dataclasses import dataclass

from scalepatterns.events import Event

__all__ = [
    "BreakerClosed",
    "BreakerHalfOpened",
    "BreakerOpened",
    "BreakerRejected",
    "EndpointEjected",
    "EndpointReadmitted",
    "FallbackUsed",
    "RetryAttempt",
    "RetryGaveUp",
    "RetryScheduled",
    "TimeoutExpired",
]


@dataclass(frozen=True, slots=True)
class RetryAttempt(Event):
    """An attempt is about to run (`attempt` counts from 1)."""

    attempt: int


@dataclass(frozen=True, slots=True)
class RetryScheduled(Event):
    """An attempt failed with a retryable error; the next one runs after `delay` seconds."""

    attempt: int
    delay: float
    error: str


@dataclass(frozen=True, slots=True)
class RetryGaveUp(Event):
    """Retrying stopped; the last error is re-raised.

    `reason` is ``"attempts"``, ``"deadline"`` or ``"budget"``.
    """

    attempts: int
    reason: str
    error: str


@dataclass(frozen=True, slots=True)
class BreakerOpened(Event):
    """The breaker opened: calls are refused for `wait` seconds.

    `failure_rate` and `slow_rate` are the window's rates (0..1) when it tripped
    (from the half-open trials when re-opening).
    """

    failure_rate: float
    slow_rate: float
    wait: float


@dataclass(frozen=True, slots=True)
class BreakerHalfOpened(Event):
    """The open period ended: a limited number of trial calls may go through."""

    trial_calls: int


@dataclass(frozen=True, slots=True)
class BreakerClosed(Event):
    """The trial calls succeeded: the breaker closed and normal traffic resumes."""


@dataclass(frozen=True, slots=True)
class BreakerRejected(Event):
    """A call was refused without being tried (`CircuitOpen` raised)."""

    retry_after: float


@dataclass(frozen=True, slots=True)
class EndpointEjected(Event):
    """The balancer stopped sending traffic to `endpoint` for `duration` seconds.

    `reason` is ``"consecutive_failures"``, ``"failure_rate"`` or ``"health_check"``.
    """

    endpoint: str
    reason: str
    duration: float


@dataclass(frozen=True, slots=True)
class EndpointReadmitted(Event):
    """An ejected endpoint passed its trial (or a health check) and takes traffic again."""

    endpoint: str


@dataclass(frozen=True, slots=True)
class TimeoutExpired(Event):
    """A call ran out of its time budget (`DeadlineExceeded` raised)."""

    timeout: float


@dataclass(frozen=True, slots=True)
class FallbackUsed(Event):
    """A call failed with one of the handled errors and the fallback answered instead."""

    error: str
