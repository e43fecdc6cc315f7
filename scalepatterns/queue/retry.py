"""When to retry a failed message, and after how long.

A `RetryPolicy` is a pure decision: given the attempt that failed and the error, it
answers `Retry(delay)` or `DeadLetter(reason)`. The worker carries it out by publishing
the message to a delay queue (never by sleeping in the consumer).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scalepatterns._checks import exception_types
from scalepatterns.errors import ConfigurationError
from scalepatterns.queue.errors import Reject

__all__ = [
    "DeadLetter",
    "Retry",
    "RetryPolicy",
    "exponential_backoff",
]

WaitStrategy = Callable[[int], float]
"""attempt number that failed (1, 2, ...) -> seconds to wait before the next try."""


@dataclass(frozen=True, slots=True)
class Retry:
    delay: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str


def exponential_backoff(
    initial: float = 0.5, maximum: float = 300.0, multiplier: float = 2.0, jitter: float = 1.0
) -> WaitStrategy:
    """``initial * multiplier**(attempt-1)`` capped at `maximum`, plus up to `jitter` s random.

    The same shape as tenacity's ``wait_exponential_jitter``; any tenacity wait strategy
    (``wait_exponential(...) + wait_random(...)``) is accepted by `RetryPolicy` as well.
    """
    for name, value in (("initial", initial), ("maximum", maximum), ("jitter", jitter)):
        if value < 0:
            raise ConfigurationError(name, value, "a number of seconds >= 0")
    if multiplier < 1:
        raise ConfigurationError("multiplier", multiplier, "a factor >= 1")

    def wait(attempt: int) -> float:
        base = initial * multiplier ** max(0, attempt - 1)
        return min(maximum, base) + random.uniform(0, jitter)

    return wait


def _adapt(wait: Any) -> WaitStrategy:
    """Accept a plain callable(attempt) or a tenacity wait strategy."""
    import tenacity

    if isinstance(wait, tenacity.wait.wait_base):

        def tenacity_wait(attempt: int) -> float:
            state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
            state.attempt_number = attempt
            return float(wait(state))

        return tenacity_wait
    if not callable(wait):
        raise ConfigurationError(
            "wait", wait, "a callable(attempt) -> seconds, or a tenacity wait strategy"
        )
    return wait  # type: ignore[no-any-return]


@dataclass(frozen=True)
class RetryPolicy:
    """Retry a failing message up to `attempts` tries in all, waiting `wait(attempt)`.

    Args:
        attempts: tries in all, including the first (1 = never retry).
        wait: seconds before the next try, from the attempt that failed; a callable or a
            tenacity wait strategy. Default: `exponential_backoff()`.
        on: exception types worth retrying; any other goes to the dead-letter queue
            at once. `Reject` is never retried.

    ```python
    from scalepatterns.queue import RetryPolicy

    policy = RetryPolicy(attempts=3, wait=lambda attempt: 0.1 * attempt)
    assert policy.decide(1, TimeoutError()).delay == 0.1
    assert policy.decide(3, TimeoutError()).reason.startswith("gave up after 3")
    ```
    """

    attempts: int = 5
    wait: Any = field(default_factory=exponential_backoff)
    on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if (
            isinstance(self.attempts, bool)
            or not isinstance(self.attempts, int)
            or self.attempts < 1
        ):
            raise ConfigurationError("attempts", self.attempts, "an int >= 1")
        object.__setattr__(self, "on", exception_types("on", self.on))
        object.__setattr__(self, "_wait", _adapt(self.wait))

    def decide(self, attempt: int, error: BaseException) -> Retry | DeadLetter:
        """What to do after try number `attempt` failed with `error`."""
        if isinstance(error, Reject):
            return DeadLetter("rejected by the handler")
        if not isinstance(error, self.on):
            return DeadLetter(f"{type(error).__name__} is not retried")
        if attempt >= self.attempts:
            return DeadLetter(f"gave up after {attempt} attempts")
        delay = self._wait(attempt)  # type: ignore[attr-defined]
        if (
            isinstance(delay, bool)
            or not isinstance(delay, (int, float))
            or not math.isfinite(delay)
        ):
            # A bug in the policy must not loop the message forever: park it where it
            # can be inspected and redriven once the policy is fixed.
            return DeadLetter(f"the retry policy's wait({attempt}) gave {delay!r}, not seconds")
        return Retry(max(0.0, float(delay)))
