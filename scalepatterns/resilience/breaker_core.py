"""The circuit breaker's pure state machine: no I/O, no locks, time from a clock.

`BreakerCore` decides; `CircuitBreaker` (in `breaker.py`) locks, calls the function,
emits events and talks to a shared store. The core is what the hypothesis state-machine
test pins down against a naive reference model.

States:

- **closed**: every call goes through; outcomes fill a sliding window (the last N calls,
  or the last N seconds). Once the window holds at least `minimum_calls` outcomes and the
  share of failures reaches `failure_rate_threshold` (or the share of slow calls reaches
  `slow_call_rate_threshold`), the breaker opens.
- **open**: calls are refused for `cooldown` seconds.
- **half-open**: `trial_calls` calls are let through; one bad trial re-opens the breaker,
  `trial_calls` good ones close it with an empty window.

The open period and the trials are the shared core's (`scalepatterns._cooldown`, as for
`OutageGuard` and the load balancer); the window, the rates and the state names are the
breaker's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from scalepatterns._checks import seconds
from scalepatterns._cooldown import CooldownPolicy, CooldownState
from scalepatterns.clock import Clock
from scalepatterns.errors import ConfigurationError

__all__ = [
    "BreakerCore",
    "BreakerPolicy",
    "BreakerStateName",
    "CLOSED",
    "CountWindow",
    "HALF_OPEN",
    "OPEN",
    "TimeWindow",
]

BreakerStateName = Literal["closed", "open", "half_open"]
CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker trips, how long it stays open, how it tries again.

    Attributes:
        failure_rate_threshold: share of failed calls (0 < x <= 1) that opens the breaker.
        window: the sliding window's size: a number of calls (``window_type="count"``)
            or of whole seconds (``window_type="time"``).
        window_type: ``"count"`` (the last `window` calls) or ``"time"`` (the calls of
            the last `window` seconds, in one-second buckets).
        minimum_calls: outcomes the window must hold before a rate is judged.
        slow_call_duration: seconds above which a call counts as slow (None: never).
        slow_call_rate_threshold: share of slow calls (0 < x <= 1) that opens the breaker.
        cooldown: seconds the breaker refuses calls once open.
        trial_calls: calls let through while half-open; all must succeed to close.
    """

    failure_rate_threshold: float = 0.5
    window: int = 20
    window_type: Literal["count", "time"] = "count"
    minimum_calls: int = 10
    slow_call_duration: float | None = None
    slow_call_rate_threshold: float = 1.0
    cooldown: float = 30.0
    trial_calls: int = 3

    def __post_init__(self) -> None:
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            rate = getattr(self, name)
            if not isinstance(rate, (int, float)) or not 0 < rate <= 1:
                raise ConfigurationError(name, rate, "a share between 0 (excluded) and 1")
        if not isinstance(self.window, int) or isinstance(self.window, bool) or self.window < 1:
            raise ConfigurationError("window", self.window, "an integer >= 1 (calls or seconds)")
        if self.window_type not in ("count", "time"):
            raise ConfigurationError("window_type", self.window_type, "'count' or 'time'")
        if not isinstance(self.minimum_calls, int) or self.minimum_calls < 1:
            raise ConfigurationError("minimum_calls", self.minimum_calls, "an integer >= 1")
        if self.window_type == "count" and self.minimum_calls > self.window:
            raise ConfigurationError(
                "minimum_calls", self.minimum_calls, f"at most window={self.window} calls"
            )
        seconds("slow_call_duration", self.slow_call_duration, allow_none=True, positive=True)
        self.cooldown_policy()  # checks `cooldown` and `trial_calls`

    def cooldown_policy(self) -> CooldownPolicy:
        """The open period and the trials, as the shared core's policy (the breaker trips
        on its window's rates, not on failures in a row).

        Raises:
            ConfigurationError: `cooldown` or `trial_calls` out of range.
        """
        return CooldownPolicy(None, self.cooldown, trial_calls=self.trial_calls)


class CountWindow:
    """The outcomes of the last `size` calls, with running totals (O(1) per call)."""

    __slots__ = ("_codes", "_index", "calls", "failures", "size", "slows")

    def __init__(self, size: int) -> None:
        self.size = size
        self._codes = bytearray(size)  # bit 0: failed, bit 1: slow, bit 2: present
        self._index = 0
        self.calls = self.failures = self.slows = 0

    def add(self, now: float, failed: bool, slow: bool) -> None:
        old = self._codes[self._index]
        if old:
            self.calls -= 1
            self.failures -= old & 1
            self.slows -= (old >> 1) & 1
        self._codes[self._index] = 4 | failed | (slow << 1)
        self._index = (self._index + 1) % self.size
        self.calls += 1
        self.failures += failed
        self.slows += slow

    def reset(self) -> None:
        self._codes = bytearray(self.size)
        self._index = 0
        self.calls = self.failures = self.slows = 0


class TimeWindow:
    """The outcomes of the calls in the last `seconds` whole seconds (one bucket each)."""

    __slots__ = ("_buckets", "_last_second", "calls", "failures", "seconds", "slows")

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self._last_second = -1
        # bucket: [epoch second, calls, failures, slows]
        self._buckets = [[-1, 0, 0, 0] for _ in range(seconds)]
        self.calls = self.failures = self.slows = 0

    def expire(self, now: float) -> None:
        """Drop the buckets older than the window ending at `now`."""
        oldest = int(now) - self.seconds
        for bucket in self._buckets:
            if 0 <= bucket[0] <= oldest:
                self._drop(bucket)

    def _drop(self, bucket: list[int]) -> None:
        self.calls -= bucket[1]
        self.failures -= bucket[2]
        self.slows -= bucket[3]
        bucket[:] = [-1, 0, 0, 0]

    def add(self, now: float, failed: bool, slow: bool) -> None:
        second = int(now)
        if second != self._last_second:  # expire at most once per second
            self.expire(now)
            self._last_second = second
        bucket = self._buckets[second % self.seconds]
        if bucket[0] != second:
            self._drop(bucket)
            bucket[0] = second
        bucket[1] += 1
        bucket[2] += failed
        bucket[3] += slow
        self.calls += 1
        self.failures += failed
        self.slows += slow

    def reset(self) -> None:
        for bucket in self._buckets:
            bucket[:] = [-1, 0, 0, 0]
        self._last_second = -1
        self.calls = self.failures = self.slows = 0


class BreakerCore:
    """The decisions of a circuit breaker, fed outcomes and a clock.

    Not thread-safe on its own: `CircuitBreaker` serialises access with a lock.

    Example:

    ```python
    from scalepatterns.clock import FakeClock
    from scalepatterns.resilience.breaker_core import BreakerCore, BreakerPolicy

    clock = FakeClock()
    core = BreakerCore(BreakerPolicy(window=4, minimum_calls=2, cooldown=10), clock)
    core.record(failed=True)
    assert core.record(failed=True) == "open"
    assert core.permit() == 10.0          # refused: retry after 10 s
    clock.advance(10)
    assert core.permit() is None          # a trial call may go
    ```
    """

    __slots__ = (
        "_clock",
        "_cooldown",
        "last_failure_rate",
        "last_slow_rate",
        "policy",
        "state",
        "window",
    )

    def __init__(self, policy: BreakerPolicy, clock: Clock) -> None:
        self.policy = policy
        self._clock = clock
        self.window: CountWindow | TimeWindow = (
            CountWindow(policy.window)
            if policy.window_type == "count"
            else TimeWindow(policy.window)
        )
        self.state: BreakerStateName = CLOSED
        # the open period and the half-open trials
        self._cooldown = CooldownState(policy.cooldown_policy())
        self.last_failure_rate = 0.0
        self.last_slow_rate = 0.0

    @property
    def open_until(self) -> float:
        """The monotonic time the open period ends (0.0 while closed)."""
        cooldown = self._cooldown
        return cooldown.until if cooldown.out else 0.0

    def refresh(self) -> BreakerStateName | None:
        """Move open -> half-open once the open period is over; return the new state if so."""
        if self.state == OPEN and not self._cooldown.cooling(self._clock.monotonic()):
            self.state = HALF_OPEN
            return HALF_OPEN
        return None

    def permit(self) -> float | None:
        """None if a call may go now; otherwise the seconds until one may (>= 0)."""
        if self.state == CLOSED:
            return None
        cooldown = self._cooldown
        if self.state == OPEN:
            remaining = cooldown.until - self._clock.monotonic()
            if remaining > 0:
                return remaining
            self.refresh()
        return None if cooldown.try_trial(self._clock.monotonic()) else 0.0

    def release(self) -> None:
        """A permitted call ended with an outcome that counts neither way."""
        self._cooldown.release_trial()  # none are out unless half-open

    def record(self, failed: bool, duration: float = 0.0) -> BreakerStateName | None:
        """Count a call's outcome; return ``"open"`` or ``"closed"`` if the state changed."""
        slow_after = self.policy.slow_call_duration
        slow = slow_after is not None and duration >= slow_after
        state = self.state
        if state == CLOSED:
            window = self.window
            now = self._clock.monotonic() if window.__class__ is TimeWindow else 0.0
            window.add(now, failed, slow)
            if window.calls < self.policy.minimum_calls:
                return None
            return self._judge()
        if state == HALF_OPEN:
            cooldown = self._cooldown
            if failed or slow:
                if cooldown.failed() is None:
                    return None  # no trial is out: a call started before the breaker opened
                self.last_failure_rate, self.last_slow_rate = float(failed), float(slow)
                self.trip()
                return OPEN
            if cooldown.succeeded():  # the last of `trial_calls` good trials
                self.close()
                return CLOSED
        return None  # open: an outcome of a call started before the breaker opened

    def record_success(self) -> BreakerStateName | None:
        """`record(failed=False, duration=0.0)`, faster on the path healthy calls take.

        In a closed breaker with a count window a fast success cannot raise a rate (it
        replaces an outcome at least as good), so the rates are judged only when the
        window first reaches `minimum_calls`.
        """
        window = self.window
        if self.state != CLOSED or window.__class__ is not CountWindow:
            return self.record(False, 0.0)
        assert isinstance(window, CountWindow)
        codes = window._codes
        index = window._index
        old = codes[index]
        if old:
            window.failures -= old & 1
            window.slows -= (old >> 1) & 1
        else:
            window.calls += 1
        codes[index] = 4
        index += 1
        window._index = 0 if index == window.size else index
        if old or window.calls != self.policy.minimum_calls:
            return None
        return self._judge()

    def _judge(self) -> BreakerStateName | None:
        window = self.window
        failure_rate = window.failures / window.calls
        slow_rate = window.slows / window.calls
        if failure_rate >= self.policy.failure_rate_threshold or (
            self.policy.slow_call_duration is not None
            and slow_rate >= self.policy.slow_call_rate_threshold
        ):
            self.last_failure_rate, self.last_slow_rate = failure_rate, slow_rate
            self.trip()
            return OPEN
        return None

    def trip(self, until: float | None = None) -> None:
        """Open the breaker (until monotonic time `until`, default now + cooldown)."""
        self.state = OPEN
        self._cooldown.trip(self._clock.monotonic(), until=until)
        self.window.reset()

    def close(self) -> None:
        """Close the breaker with an empty window."""
        self.state = CLOSED
        self._cooldown.reset()
        self.window.reset()

    def window_counts(self) -> tuple[int, int, int]:
        """The window's (calls, failures, slow calls) as of now."""
        window = self.window
        if isinstance(window, TimeWindow):
            window.expire(self._clock.monotonic())
        return window.calls, window.failures, window.slows

    def retry_after(self) -> float:
        """Seconds until a call may be tried (0.0 unless open)."""
        if self.state != OPEN:
            return 0.0
        return self._cooldown.remaining(self._clock.monotonic())
