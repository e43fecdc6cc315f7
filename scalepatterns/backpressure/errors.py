"""Errors specific to the backpressure block (the rest are in `scalepatterns.errors`)."""

from __future__ import annotations

from scalepatterns.errors import Refused

__all__ = ["BulkheadFull"]


class BulkheadFull(Refused):
    """A concurrency limit refused the call: every slot was taken.

    Raised by `ConcurrencyLimiter` when it is full and its waiting room is full too, or when
    a waiter's `timeout` ran out, and by `AdaptiveLimiter` when it sheds a call.

    Attributes:
        name: the limiter's name.
        limit: the concurrency limit at the time of the refusal.
        reason: ``"full"`` (no slot, no room to wait), ``"timeout"`` (waited too long) or
            ``"shed"`` (an adaptive limiter dropped lower-priority work).
        retry_after: a hint, in seconds, for when to try again (``None`` if unknown).
    """

    def __init__(
        self, name: str, limit: int, reason: str, retry_after: float | None = None
    ) -> None:
        self.name = name
        self.limit = limit
        self.reason = reason
        self.retry_after = retry_after
        if reason == "timeout":
            what = f"no slot freed up within the timeout ({limit} in use)"
        elif reason == "shed":
            what = f"lower-priority work is shed while {limit} calls are in flight"
        else:
            what = f"all {limit} slots are in use and the waiting room is full"
        super().__init__(f"bulkhead {name!r} refused the call: {what}; retry later or add capacity")
