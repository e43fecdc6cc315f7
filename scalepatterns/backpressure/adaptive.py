"""`AdaptiveLimiter`: a concurrency limit that finds what a dependency can take.

Each finished call reports its round-trip time (or that it was dropped: a timeout, an
overload error); a limit algorithm turns those samples into a new limit:

- `AIMD`: additive increase while calls succeed, multiplicative decrease on a drop (or on a
  round trip slower than `latency_threshold`). Simple; needs a drop signal.
- `Vegas`: the latency-gradient algorithm of TCP Vegas as Netflix's concurrency-limits uses
  it. With ``rtt_noload`` the fastest round trip seen, ``limit * (1 - rtt_noload / rtt)``
  estimates how many calls are queued at the dependency; the limit grows while that queue
  is short and shrinks when it is long, so it settles just above the dependency's knee
  (the concurrency past which latency rises) without needing a single failure.
- `Gradient`: Netflix's gradient limit: the ratio of the fastest to the current round trip
  scales the limit, plus a square-root allowance of queued calls.

Priorities shed low-priority work first: priority ``p`` is admitted only while fewer than
``limit * priorities[p]`` calls are in flight.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Protocol

from scalepatterns._checks import exception_types
from scalepatterns.backpressure.errors import BulkheadFull
from scalepatterns.backpressure.events import BulkheadRejected, LimitChanged, WorkShed
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import BackendUnavailable, ConfigurationError, DeadlineExceeded
from scalepatterns.events import Listeners, default_listeners

__all__ = ["AIMD", "AdaptiveLimiter", "Gradient", "LimitAlgorithm", "Permit", "Vegas"]


class LimitAlgorithm(Protocol):
    """Turns one finished call into a new concurrency limit."""

    def update(self, limit: float, rtt: float, inflight: int, dropped: bool) -> float:
        """The new limit after a call that took `rtt` seconds with `inflight` in flight."""
        ...


def _positive(name: str, value: float, *, below_one: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigurationError(name, value, "a number > 0")
    if below_one and value >= 1:
        raise ConfigurationError(name, value, "a number between 0 and 1 (exclusive)")
    return float(value)


class AIMD:
    """Additive increase, multiplicative decrease, as TCP Reno does per round trip.

    The limit grows by `increase` per round trip (``increase / limit`` per successful call)
    while it is being used, and is multiplied by `backoff` on a drop or a call slower than
    `latency_threshold` seconds, at most once per round trip (the calls already in flight
    when it backed off do not count again).
    """

    def __init__(
        self, *, increase: float = 1.0, backoff: float = 0.9, latency_threshold: float | None = None
    ) -> None:
        self.increase = _positive("increase", increase)
        self.backoff = _positive("backoff", backoff, below_one=True)
        self.latency_threshold = (
            None if latency_threshold is None else _positive("latency_threshold", latency_threshold)
        )
        self._hold = 0  # samples still ignored after a backoff

    def update(self, limit: float, rtt: float, inflight: int, dropped: bool) -> float:
        threshold = self.latency_threshold
        if dropped or (threshold is not None and rtt > threshold):
            if self._hold > 0:
                self._hold -= 1
                return limit
            self._hold = inflight
            return limit * self.backoff
        if self._hold > 0:
            self._hold -= 1
        if inflight * 2 >= limit:  # only grow a limit that is actually being used
            return limit + self.increase / limit
        return limit


class Vegas:
    """TCP Vegas style: grow while the estimated queue at the dependency is short.

    ``rtt_noload`` is the fastest round trip seen; ``limit * (1 - rtt_noload / rtt)``
    estimates the calls queued at the dependency. Below ``alpha * log10(limit)`` queued the
    limit grows, above ``beta * log10(limit)`` it shrinks, by about ``log10(limit)`` per
    round trip (each sample moves it by a ``1/limit`` share of that step, as TCP Vegas
    adjusts once per round trip), so it settles a few calls above the dependency's knee.

    Args:
        alpha, beta: queue thresholds as multiples of ``log10(limit)`` (Netflix's 3 and 6).
    """

    def __init__(self, *, alpha: float = 3.0, beta: float = 6.0) -> None:
        self.alpha = _positive("alpha", alpha)
        self.beta = _positive("beta", beta)
        if self.beta <= self.alpha:
            raise ConfigurationError("beta", beta, f"a number > alpha ({alpha})")
        self.rtt_noload = 0.0

    def update(self, limit: float, rtt: float, inflight: int, dropped: bool) -> float:
        if rtt > 0 and (self.rtt_noload == 0.0 or rtt < self.rtt_noload):
            self.rtt_noload = rtt
            return limit
        step = max(1.0, math.log10(limit))
        if dropped:
            return limit - step
        if inflight * 2 < limit:
            return limit  # the caller is not using the limit: nothing to learn
        queue = limit * (1 - self.rtt_noload / rtt)
        if queue <= self.alpha * step:
            return limit + step / limit
        if queue >= self.beta * step:
            return limit - step / limit
        return limit


class Gradient:
    """Netflix's gradient limit: scale the limit by how much latency rose over the fastest.

    ``gradient = clamp(tolerance * rtt_noload / rtt, 0.5, 1)``; the limit moves toward
    ``limit * gradient + sqrt(limit)`` (the square root is a small allowance of queued calls),
    about one step per round trip. On a dependency whose latency rises past a knee, it
    settles near ``knee * tolerance + sqrt(knee)``. A drop halves the limit per round trip.

    Args:
        tolerance: how far latency may rise over the fastest seen before the limit shrinks
            (1.0: not at all; real dependencies are noisy, so 1.5-2 is usual).
    """

    def __init__(self, *, tolerance: float = 1.5) -> None:
        self.tolerance = _positive("tolerance", tolerance)
        if self.tolerance < 1:
            raise ConfigurationError("tolerance", tolerance, "a number >= 1")
        self.rtt_noload = 0.0

    def update(self, limit: float, rtt: float, inflight: int, dropped: bool) -> float:
        if rtt > 0 and (self.rtt_noload == 0.0 or rtt < self.rtt_noload):
            self.rtt_noload = rtt
        if dropped:
            return float(limit * 0.5 ** (1 / limit))
        if inflight * 2 < limit:
            return limit  # the caller is not using the limit: nothing to learn
        gradient = max(0.5, min(1.0, self.tolerance * self.rtt_noload / rtt))
        target = limit * gradient + math.sqrt(limit)
        return limit + (target - limit) / limit


_ALGORITHMS: dict[str, type[AIMD] | type[Gradient] | type[Vegas]] = {
    "aimd": AIMD,
    "gradient": Gradient,
    "vegas": Vegas,
}

_DROP_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,
    DeadlineExceeded,
    BackendUnavailable,
)


class Permit:
    """One admitted call. Report how it went with `success()` or `dropped()` (or use it as a
    context manager: a normal exit is a success, a timeout-like error a drop, any other
    error is not counted), and the limiter learns from its round-trip time."""

    __slots__ = ("_done", "_limiter", "_started", "priority")

    def __init__(self, limiter: AdaptiveLimiter, priority: int, started: float) -> None:
        self._limiter = limiter
        self._started = started
        self._done = False
        self.priority = priority

    def success(self) -> None:
        """The call succeeded: feed its round trip to the algorithm."""
        self._finish(dropped=False, learn=True)

    def dropped(self) -> None:
        """The call timed out or the dependency refused it: shrink the limit."""
        self._finish(dropped=True, learn=True)

    def ignore(self) -> None:
        """Free the slot without teaching the algorithm anything (e.g. a client error)."""
        self._finish(dropped=False, learn=False)

    def _finish(self, *, dropped: bool, learn: bool) -> None:
        if self._done:
            return
        self._done = True
        self._limiter._release(self._started, dropped=dropped, learn=learn)

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.success()
        elif isinstance(exc, self._limiter.drop_on):
            self.dropped()
        else:
            self.ignore()

    async def __aenter__(self) -> Permit:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class AdaptiveLimiter:
    """A concurrency limit that adapts to the latency (and drops) of what it protects.

    Admission never waits: a call over the limit is refused at once (`BulkheadFull` with
    ``reason="shed"``), which is what keeps queues from building up in front of an
    overloaded dependency.

    Args:
        algorithm: ``"vegas"`` (default), ``"gradient"``, ``"aimd"``, or an object with an
            ``update(limit, rtt, inflight, dropped) -> float`` method.
        initial_limit, min_limit, max_limit: the limit's start and bounds.
        priorities: share of the limit each priority may use, highest priority (0) first,
            e.g. ``(1.0, 0.8, 0.5)``; default: one priority using the whole limit.
        drop_on: exception types that count as drops when a `Permit` exits with them.

    ```python
    from scalepatterns import AdaptiveLimiter, BulkheadFull, FakeClock

    clock = FakeClock()
    limiter = AdaptiveLimiter(initial_limit=2, priorities=(1.0, 0.5), clock=clock)
    with limiter.acquire(priority=1):     # low priority may use half the limit: 1 slot
        try:
            limiter.acquire(priority=1)
        except BulkheadFull as exc:
            assert exc.reason == "shed"
        with limiter.acquire(priority=0):  # high priority still gets in
            clock.advance(0.01)
    assert limiter.inflight == 0
    ```
    """

    def __init__(
        self,
        algorithm: str | LimitAlgorithm = "vegas",
        *,
        initial_limit: int = 20,
        min_limit: int = 1,
        max_limit: int = 1000,
        priorities: Sequence[float] = (1.0,),
        drop_on: tuple[type[BaseException], ...] = _DROP_ERRORS,
        name: str = "adaptive",
        clock: Clock = SYSTEM_CLOCK,
        listeners: Listeners | None = None,
    ) -> None:
        if isinstance(algorithm, str):
            if algorithm not in _ALGORITHMS:
                raise ConfigurationError("algorithm", algorithm, f"one of {sorted(_ALGORITHMS)}")
            self.algorithm: LimitAlgorithm = _ALGORITHMS[algorithm]()
        elif callable(getattr(algorithm, "update", None)):
            self.algorithm = algorithm
        else:
            raise TypeError(
                "algorithm= takes 'vegas', 'gradient', 'aimd' or an object with update()"
            )
        for param, value in (("min_limit", min_limit), ("max_limit", max_limit)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(param, value, "an integer >= 1")
        if max_limit < min_limit:
            raise ConfigurationError(
                "max_limit", max_limit, f"an integer >= min_limit ({min_limit})"
            )
        if (
            isinstance(initial_limit, bool)
            or not isinstance(initial_limit, int)
            or not min_limit <= initial_limit <= max_limit
        ):
            raise ConfigurationError(
                "initial_limit", initial_limit, f"an integer in {min_limit}..{max_limit}"
            )
        drop_on = exception_types("drop_on", drop_on)
        shares = tuple(priorities)
        if not shares or any(
            isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s <= 1 for s in shares
        ):
            raise ConfigurationError(
                "priorities", priorities, "a non-empty sequence of shares in (0, 1]"
            )
        if any(lower > higher for higher, lower in itertools.pairwise(shares)):
            raise ConfigurationError(
                "priorities",
                priorities,
                "shares that never grow from the highest priority (0) to the lowest, "
                "e.g. (1.0, 0.8, 0.5): a lower priority may not use more of the limit",
            )
        self.priorities = shares
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.drop_on = drop_on
        self.name = name
        self._clock = clock
        self._listeners = listeners if listeners is not None else default_listeners
        self._lock = threading.Lock()
        self._limit = float(initial_limit)
        self._inflight = 0
        self.shed = 0

    @property
    def limit(self) -> int:
        """The current concurrency limit."""
        return int(self._limit)

    @property
    def inflight(self) -> int:
        """Calls admitted and not yet finished."""
        return self._inflight

    def try_acquire(self, priority: int = 0) -> Permit | None:
        """A `Permit` if a call of `priority` may start now, else None (the call is shed)."""
        if (
            isinstance(priority, bool)
            or not isinstance(priority, int)
            or not (0 <= priority < len(self.priorities))
        ):
            raise ConfigurationError(
                "priority", priority, f"an integer in 0..{len(self.priorities) - 1}"
            )
        with self._lock:
            allowed = max(1.0, math.floor(self._limit) * self.priorities[priority])
            if self._inflight < allowed:
                self._inflight += 1
                return Permit(self, priority, self._clock.monotonic())
            self.shed += 1
            limit = int(self._limit)
        if self._listeners.active:
            self._listeners.emit(WorkShed(self.name, priority, "limiter"))
            self._listeners.emit(BulkheadRejected(self.name, "shed", limit, priority))
        return None

    def acquire(self, priority: int = 0) -> Permit:
        """A `Permit` for a call of `priority`.

        Raises:
            BulkheadFull: ``reason="shed"``: the limit (or this priority's share) is in use.
        """
        permit = self.try_acquire(priority)
        if permit is None:
            raise BulkheadFull(self.name, self.limit, "shed")
        return permit

    def _release(self, started: float, *, dropped: bool, learn: bool) -> None:
        rtt = self._clock.monotonic() - started
        changed = None
        with self._lock:
            inflight = self._inflight
            self._inflight -= 1
            if learn and (rtt > 0 or dropped):  # a drop teaches, however fast it came
                old = self._limit
                new = self.algorithm.update(old, rtt, inflight, dropped)
                self._limit = min(float(self.max_limit), max(float(self.min_limit), new))
                if int(self._limit) != int(old):
                    changed = (int(old), int(self._limit))
        if changed is not None and self._listeners.active:
            self._listeners.emit(LimitChanged(self.name, *changed))

    def __repr__(self) -> str:
        return f"AdaptiveLimiter({self.name!r}, limit={self.limit}, inflight={self._inflight})"
