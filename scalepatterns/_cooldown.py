"""Failures in a row, out for a cool-down, then a trial: the one core of four blocks.

`OutageGuard`, `BreakerCore`, the `LoadBalancer`'s ejection and `ReplicaHealth` all take
something out of use the same way, and all keep that state in a `CooldownState`:

1. failures are counted in a row (a success resets the count); the
   `failure_threshold`-th one makes a cool-down due;
2. the subject is out until ``now + cooldown`` (with `max_cooldown`, the cool-down doubles
   for each one in a row, up to `max_cooldown`);
3. once that time has passed, `trial_calls` trial calls may go;
4. a good trial (`trial_calls` good ones) ends the cool-down; a bad one starts the next.

The state is pure: no I/O, no lock, no clock of its own. Callers pass the monotonic time
(`now`) of their clock, and keep the locking they had. Only the methods that need the time
take it, so a healthy hot path reads no clock: a caller may skip `succeeded` when
``not (failures or out)`` (it would change nothing).

What each caller keeps for itself, on purpose:

- `BreakerCore` trips on a failure *share* over a sliding window, not on failures in a row
  (``failure_threshold=None``; it calls `trip` itself), lets `trial_calls` trials through
  and needs every one of them good. It holds the state names (closed, open, half-open)
  its events report.
- `LoadBalancer` also ejects on a failure share over its last calls, and may refuse a due
  ejection to keep `max_ejected` of the endpoints in use (so it asks `failed` what is due
  and decides whether to `trip`). Its cool-downs double up to `max_cooldown`. An active
  health check verdict overrides all of this (`reset`).
- `ReplicaHealth` has no trial gate: once the cool-down is over every read may try the
  replica (``outcomes="any"``; it never calls `try_trial`), because a read session does
  not report back when it is done with a replica. It also takes replicas out for lag,
  which has no cool-down.
- `OutageGuard` lets one probe through; a probe that never reports (its caller was
  interrupted) is presumed lost after one cool-down (``trial_timeout=cooldown``), so one
  lost probe cannot keep the backend skipped for good.

Which outcomes count while out (`CooldownPolicy.outcomes`):

- ``"trial"`` (breaker, balancer): only outcomes reported while a trial is out decide;
  the outcomes of calls that started before the cool-down are ignored, and a new
  cool-down starts a fresh count of failures.
- ``"any"`` (guard, replica health): these callers cannot tell a trial's outcome from a
  late call's, so any success ends the cool-down, any failure starts another, and the
  failures go on counting (what `ReplicaStatus.consecutive_failures` shows).

```python
from scalepatterns._cooldown import CooldownPolicy, CooldownState

state = CooldownState(CooldownPolicy(failure_threshold=2, cooldown=10.0, max_cooldown=40.0))
assert state.failed() is None
assert state.failed() == "threshold"      # due: the caller decides to trip
assert state.trip(now=0.0) == 10.0        # out until 10.0
assert not state.try_trial(now=5.0)
assert state.try_trial(now=10.0)          # the one trial call
assert state.failed() == "again"          # it failed:
assert state.trip(now=11.0) == 20.0       # out for twice as long
assert state.try_trial(now=31.0)
assert state.succeeded()                  # back in use
assert (state.out, state.failures) == (False, 0)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from scalepatterns._checks import seconds
from scalepatterns.errors import ConfigurationError

__all__ = ["CooldownPolicy", "CooldownState", "Due"]

Due = Literal["threshold", "again"]
"""What `CooldownState.failed` found due: ``"threshold"``, the `failure_threshold`-th
failure in a row while in use; ``"again"``, a failure that counts while out (a trial's)."""

# 2.0 ** 1023 is the largest power of two a float holds: past it the doubling would raise
# OverflowError, and any cool-down is at `max_cooldown` long before.
_MAX_DOUBLINGS = 1023


@dataclass(frozen=True, slots=True)
class CooldownPolicy:
    """When a cool-down starts, how long it lasts, how the way back is tried.

    Attributes:
        failure_threshold: failures in a row that make a cool-down due (>= 1; None: never,
            the caller trips on its own grounds).
        cooldown: seconds out of use (> 0, finite); the first cool-down of a row.
        max_cooldown: with a value, each cool-down in a row doubles, up to this many
            seconds (>= `cooldown`); None: every cool-down is `cooldown` long.
        trial_calls: calls let through once a cool-down is over (>= 1).
        trial_timeout: seconds after which trials that have not reported are presumed
            lost and their places go to the next callers (None: trials always report).
        outcomes: ``"trial"`` or ``"any"``: which outcomes count while out (see the
            module's docstring).

    Raises:
        ConfigurationError: a value out of range, naming the parameter.
    """

    failure_threshold: int | None
    cooldown: float
    max_cooldown: float | None = None
    trial_calls: int = 1
    trial_timeout: float | None = None
    outcomes: Literal["trial", "any"] = "trial"

    def __post_init__(self) -> None:
        threshold = self.failure_threshold
        if threshold is not None and (
            not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1
        ):
            raise ConfigurationError("failure_threshold", threshold, "an integer >= 1, or None")
        seconds("cooldown", self.cooldown, positive=True)
        if self.max_cooldown is not None:
            seconds("max_cooldown", self.max_cooldown)
            if self.max_cooldown < self.cooldown:
                raise ConfigurationError(
                    "max_cooldown", self.max_cooldown, f"seconds >= cooldown={self.cooldown}"
                )
        if (
            not isinstance(self.trial_calls, int)
            or isinstance(self.trial_calls, bool)
            or self.trial_calls < 1
        ):
            raise ConfigurationError("trial_calls", self.trial_calls, "an integer >= 1")
        seconds("trial_timeout", self.trial_timeout, allow_none=True, positive=True)
        if self.outcomes not in ("trial", "any"):
            raise ConfigurationError("outcomes", self.outcomes, "'trial' or 'any'")
        # seconds given as integers are kept as floats, as the callers always did
        for name in ("cooldown", "max_cooldown", "trial_timeout"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))

    def length(self, in_row: int) -> float:
        """Seconds of the `in_row`-th cool-down in a row (1 for the first)."""
        if self.max_cooldown is None:
            return self.cooldown
        doublings = min(in_row - 1, _MAX_DOUBLINGS)
        return min(self.max_cooldown, self.cooldown * 2.0**doublings)


class CooldownState:
    """One subject's failures, cool-down and trials (not thread-safe: the caller locks).

    Attributes (read them; change them through the methods):
        policy: the `CooldownPolicy` (may be replaced; takes effect from the next call).
        failures: failures in a row.
        out: out of use: cooling down, or past the cool-down and waiting for a good trial.
        until: while out, the monotonic time the cool-down ends (0.0 while in use).
        in_row: cool-downs in a row without a good trial between them.
        trials: trial calls out now.
        passed: good trials since the cool-down ended.
    """

    __slots__ = (
        "failures",
        "in_row",
        "out",
        "passed",
        "policy",
        "trial_expires",
        "trials",
        "until",
    )

    def __init__(self, policy: CooldownPolicy) -> None:
        self.policy = policy
        self.failures = 0
        self.out = False
        self.until = 0.0
        self.in_row = 0
        self.trials = 0
        self.passed = 0
        # with `trial_timeout`: when the trials out are presumed lost
        self.trial_expires = 0.0

    def cooling(self, now: float) -> bool:
        """Whether the cool-down is still running at `now` (false once it is over, even
        before a trial succeeds)."""
        return self.out and now < self.until

    def remaining(self, now: float) -> float:
        """Seconds until the cool-down is over (0.0 when in use or over)."""
        if not self.out:
            return 0.0
        return max(0.0, self.until - now)

    def failed(self) -> Due | None:
        """Count a failure; return what it makes due (the caller then calls `trip`)."""
        self.failures += 1
        if not self.out:
            threshold = self.policy.failure_threshold
            if threshold is not None and self.failures >= threshold:
                return "threshold"
            return None
        if self.trials or self.policy.outcomes == "any":
            return "again"
        return None  # a call started before the cool-down: its outcome says nothing

    def succeeded(self) -> bool:
        """Count a success; True if it ended a cool-down (the subject is back in use)."""
        self.failures = 0
        if not self.out:
            return False
        if self.policy.outcomes == "trial":
            if not self.trials:
                return False  # a call started before the cool-down
            self.passed += 1
            if self.passed < self.policy.trial_calls:
                return False
        self.reset()
        return True

    def trip(self, now: float, *, until: float | None = None) -> float:
        """Start a cool-down at `now` (ending at `until` if given, e.g. one adopted from
        another process); return its length in seconds. Trials out are forgotten."""
        self.out = True
        self.in_row += 1
        if until is None:
            length = self.policy.length(self.in_row)
            self.until = now + length
        else:
            length = until - now
            self.until = until
        self.trials = self.passed = 0
        if self.policy.outcomes == "trial":
            self.failures = 0
        return length

    def trial_due(self, now: float) -> bool:
        """Whether a trial call may go at `now`: out, the cool-down over, a place free."""
        if not self.out or now < self.until:
            return False
        if self.trials < self.policy.trial_calls:
            return True
        return self.policy.trial_timeout is not None and now >= self.trial_expires

    def take_trial(self, now: float) -> None:
        """Let one trial call go (the caller has seen `trial_due`)."""
        if self.trials >= self.policy.trial_calls:
            self.trials = 0  # they timed out: presumed lost
        self.trials += 1
        timeout = self.policy.trial_timeout
        if timeout is not None:
            self.trial_expires = now + timeout

    def try_trial(self, now: float) -> bool:
        """`take_trial` if `trial_due`; return whether a trial call may go."""
        if not self.trial_due(now):
            return False
        self.take_trial(now)
        return True

    def admit(self, now: float) -> bool:
        """Whether a call may go at `now`: in use, or as a trial (taken if so)."""
        if not self.out:
            return True
        if now < self.until:
            return False  # cooling: what every caller of a dead backend hears, kept short
        return self.try_trial(now)

    def release_trial(self) -> None:
        """A trial call ended without a verdict (cancelled): its place is free again."""
        if self.trials:
            self.trials -= 1

    def reset(self) -> None:
        """Back in use with a clean record."""
        self.failures = 0
        self.out = False
        self.until = 0.0
        self.in_row = 0
        self.trials = self.passed = 0
        self.trial_expires = 0.0

    def __repr__(self) -> str:
        return (
            f"CooldownState(failures={self.failures}, out={self.out}, until={self.until}, "
            f"in_row={self.in_row}, trials={self.trials})"
        )
