"""Events the backpressure block emits (subscribe through `scalepatterns.events`)."""

from __future__ import annotations

from dataclasses import dataclass

from scalepatterns.events import Event

__all__ = [
    "BulkheadRejected",
    "LimitChanged",
    "LimiterBackendFailed",
    "QueueReleased",
    "QueueThrottled",
    "RateAllowed",
    "RateRejected",
    "RateWaited",
    "WorkShed",
]


@dataclass(frozen=True, slots=True)
class RateAllowed(Event):
    """A rate limiter allowed `cost` units (``backend`` is ``"memory"`` or ``"redis"``)."""

    cost: int
    backend: str


@dataclass(frozen=True, slots=True)
class RateRejected(Event):
    """A rate limiter refused `cost` units; `retry_after` seconds until it would allow them."""

    cost: int
    retry_after: float
    backend: str


@dataclass(frozen=True, slots=True)
class RateWaited(Event):
    """`acquire_or_wait` slept `waited` seconds before the limiter allowed the call."""

    waited: float


@dataclass(frozen=True, slots=True)
class LimiterBackendFailed(Event):
    """The Redis backend failed or is being skipped; the decision fell back to `fail_open`.

    Attributes:
        error: the error's type name (``"ConnectionError"``) or ``"skipped"`` while the
            outage guard is open.
        allowed: what the fallback decided.
    """

    error: str
    allowed: bool


@dataclass(frozen=True, slots=True)
class BulkheadRejected(Event):
    """A concurrency limit refused a call (`reason`: full, timeout or shed)."""

    reason: str
    limit: int
    priority: int


@dataclass(frozen=True, slots=True)
class LimitChanged(Event):
    """An adaptive limiter moved its concurrency limit."""

    old: int
    new: int


@dataclass(frozen=True, slots=True)
class QueueThrottled(Event):
    """A queue went above its high watermark: producers are held back."""

    depth: int
    high: int


@dataclass(frozen=True, slots=True)
class QueueReleased(Event):
    """A throttled queue drained below its low watermark: producers may go on."""

    depth: int
    low: int


@dataclass(frozen=True, slots=True)
class WorkShed(Event):
    """Work of `priority` was dropped to relieve pressure (`by`: ``"queue"`` or ``"limiter"``)."""

    priority: int
    by: str
