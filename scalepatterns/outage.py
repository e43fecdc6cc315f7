"""`OutageGuard`: stop touching a dead backend for a cool-down, so an outage costs microseconds.

Blocks that fail open or closed when Redis is down (the cache, the Redis rate limiter)
put every backend call behind a guard. After `failure_threshold` consecutive failures the
guard opens: `allow()` answers false without any I/O until `cooldown` seconds have passed,
then lets exactly one probe call through (half-open). A probe that succeeds closes the
guard; one that fails opens it for another cool-down.

The healthy path costs one attribute check:

```python
from scalepatterns.clock import FakeClock
from scalepatterns.outage import OutageGuard

clock = FakeClock()
guard = OutageGuard(failure_threshold=2, cooldown=5.0, clock=clock)
guard.record_failure()
guard.record_failure()
assert not guard.allow()          # open: skip the backend
clock.advance(5.0)
assert guard.allow()              # one probe goes through
assert not guard.allow()          # ...and only one
guard.record_success()
assert guard.allow()
```

For a full circuit breaker with failure-rate windows and half-open trial counts, use
`scalepatterns.resilience.CircuitBreaker`; this guard is the minimal, lock-free-on-the-
healthy-path version the backends need.
"""

from __future__ import annotations

import threading

from scalepatterns._checks import seconds
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError

__all__ = ["OutageGuard"]


class OutageGuard:
    """Counts consecutive backend failures and short-circuits calls during a cool-down.

    Args:
        failure_threshold: consecutive failures that open the guard (>= 1).
        cooldown: seconds the guard stays open before one probe is let through (> 0).
        clock: time source (`FakeClock` in tests).
    """

    __slots__ = (
        "_clock",
        "_failures",
        "_lock",
        "_open_until",
        "_probe_until",
        "cooldown",
        "threshold",
    )

    def __init__(
        self, failure_threshold: int = 3, cooldown: float = 5.0, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        if not isinstance(failure_threshold, int) or failure_threshold < 1:
            raise ConfigurationError("failure_threshold", failure_threshold, "an integer >= 1")
        seconds("cooldown", cooldown, positive=True)
        self.threshold = failure_threshold
        self.cooldown = float(cooldown)
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        # 0.0 while closed; otherwise the monotonic time the cool-down ends.
        self._open_until = 0.0
        # 0.0 unless a probe is out; then the time it is presumed lost (its caller never
        # reported: interrupted, killed), so one lost probe cannot close the door for good.
        self._probe_until = 0.0

    @property
    def is_open(self) -> bool:
        """True while calls are being short-circuited (including while a probe is out)."""
        return self._open_until != 0.0

    def allow(self) -> bool:
        """Whether the caller may touch the backend now."""
        if self._open_until == 0.0:
            return True
        with self._lock:
            if self._open_until == 0.0:
                return True
            now = self._clock.monotonic()
            if now < self._open_until or now < self._probe_until:
                return False
            self._probe_until = now + self.cooldown
            return True

    def record_success(self) -> None:
        """The backend answered: close the guard."""
        if self._failures or self._open_until:
            with self._lock:
                self._failures = 0
                self._open_until = 0.0
                self._probe_until = 0.0

    def record_failure(self) -> bool:
        """The backend failed. Returns True if this failure opened (or re-opened) the guard."""
        with self._lock:
            self._failures += 1
            if self._probe_until or self._failures >= self.threshold:
                self._open_until = self._clock.monotonic() + self.cooldown
                self._probe_until = 0.0
                return True
            return False

    def release_probe(self) -> None:
        """A call ended without a verdict on the backend (it was cancelled).

        If it was the probe, the next caller may probe instead; otherwise the guard would
        wait forever for a verdict that never comes and skip the backend for good.
        """
        if self._probe_until:
            with self._lock:
                self._probe_until = 0.0

    def retry_after(self) -> float:
        """Seconds until the next probe is allowed (0.0 when closed)."""
        if self._open_until == 0.0:
            return 0.0
        return max(0.0, self._open_until - self._clock.monotonic())

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"OutageGuard({state}, failures={self._failures}, cooldown={self.cooldown})"
