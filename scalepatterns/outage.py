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
healthy-path version the backends need. Both keep their cool-down in the same core
(`scalepatterns._cooldown`).
"""

from __future__ import annotations

import dataclasses
import threading

from scalepatterns._cooldown import CooldownPolicy, CooldownState
from scalepatterns.clock import SYSTEM_CLOCK, Clock

__all__ = ["OutageGuard"]


class OutageGuard:
    """Counts consecutive backend failures and short-circuits calls during a cool-down.

    Args:
        failure_threshold: consecutive failures that open the guard (>= 1).
        cooldown: seconds the guard stays open before one probe is let through (> 0).
            A probe that has not reported after another `cooldown` is presumed lost
            and the next caller probes instead.
        clock: time source (`FakeClock` in tests).
    """

    __slots__ = ("_clock", "_lock", "_state")

    def __init__(
        self, failure_threshold: int = 3, cooldown: float = 5.0, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        policy = CooldownPolicy(failure_threshold, cooldown, trial_timeout=cooldown, outcomes="any")
        self._state = CooldownState(policy)
        self._clock = clock
        self._lock = threading.Lock()

    @property
    def failure_threshold(self) -> int | None:
        """Consecutive failures that open the guard."""
        return self._state.policy.failure_threshold

    @property
    def cooldown(self) -> float:
        """Seconds the guard stays open (settable; applies from the next failure)."""
        return self._state.policy.cooldown

    @cooldown.setter
    def cooldown(self, value: float) -> None:
        with self._lock:
            policy = self._state.policy
            self._state.policy = dataclasses.replace(policy, cooldown=value, trial_timeout=value)

    @property
    def is_open(self) -> bool:
        """True while calls are being short-circuited (including while a probe is out)."""
        return self._state.out

    def allow(self) -> bool:
        """Whether the caller may touch the backend now."""
        state = self._state
        if not state.out:
            return True
        with self._lock:  # another thread may have closed it meanwhile
            return state.admit(self._clock.monotonic())

    def record_success(self) -> None:
        """The backend answered: close the guard."""
        state = self._state
        if state.failures or state.out:
            with self._lock:
                state.succeeded()

    def record_failure(self) -> bool:
        """The backend failed. Returns True if this failure opened (or re-opened) the guard."""
        state = self._state
        with self._lock:
            if state.failed() is None:
                return False
            state.trip(self._clock.monotonic())
            return True

    def release_probe(self) -> None:
        """A call ended without a verdict on the backend (it was cancelled).

        If it was the probe, the next caller may probe instead; otherwise the guard would
        wait forever for a verdict that never comes and skip the backend for good.
        """
        state = self._state
        if state.trials:
            with self._lock:
                state.release_trial()

    def retry_after(self) -> float:
        """Seconds until the next probe is allowed (0.0 when closed)."""
        state = self._state
        if not state.out:
            return 0.0
        return state.remaining(self._clock.monotonic())

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        failures = self._state.failures
        return f"OutageGuard({state}, failures={failures}, cooldown={self.cooldown})"
