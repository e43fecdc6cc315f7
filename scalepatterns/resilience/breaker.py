"""`CircuitBreaker`: stop calling a dependency that keeps failing, try again later.

The decisions live in `BreakerCore`; this module locks around them, runs the call,
classifies its outcome, emits events and optionally shares "open" through a store such
as Redis (`RedisBreakerState`) so every process of a fleet stops together.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Literal, ParamSpec, TypeVar, overload

from scalepatterns._checks import exception_types
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import CircuitOpen, ConfigurationError
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.resilience._callables import decorate
from scalepatterns.resilience.breaker_core import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerCore,
    BreakerPolicy,
    BreakerStateName,
)
from scalepatterns.resilience.events import (
    BreakerClosed,
    BreakerHalfOpened,
    BreakerOpened,
    BreakerRejected,
)
from scalepatterns.resilience.protocols import SharedBreakerState

__all__ = ["CircuitBreaker"]

P = ParamSpec("P")
R = TypeVar("R")
_log = logging.getLogger("scalepatterns.resilience")


class CircuitBreaker:
    """A circuit breaker for sync and async calls.

    Use it as a decorator (``@breaker``), or call through it (``breaker.call(fn, ...)``,
    ``await breaker.acall(fn, ...)``). While open it raises `CircuitOpen` (with
    `retry_after`) without calling the function.

    Args:
        name: low-cardinality name, used in events, errors and the shared store's key.
        failure_rate_threshold: share of failures in the window that opens the breaker.
        window: window size, in calls (``window_type="count"``) or seconds (``"time"``).
        window_type: ``"count"`` or ``"time"``.
        minimum_calls: outcomes needed in the window before a rate is judged.
        slow_call_duration: seconds above which a call counts as slow (None: never).
        slow_call_rate_threshold: share of slow calls that opens the breaker.
        cooldown: seconds calls are refused once open.
        trial_calls: calls let through while half-open; all must succeed to close.
        on: exception types counted as failures (others count as successes).
        ignore: exception types that count neither way (checked first).
        shared: a store shared by a fleet (e.g. `RedisBreakerState`); None: local only.
        sync_interval: while closed, read the shared store at most this often (seconds).
        clock: time source (`FakeClock` in tests).
        listeners: event registry (default: the process-wide one).

    Example:

    ```python
    from scalepatterns import CircuitOpen, FakeClock
    from scalepatterns.resilience import CircuitBreaker

    clock = FakeClock()
    breaker = CircuitBreaker(name="payments", window=5, minimum_calls=2, cooldown=30, clock=clock)

    @breaker
    def charge() -> None:
        raise ConnectionError("payments down")

    for _ in range(2):
        try:
            charge()
        except ConnectionError:
            pass
    assert breaker.state == "open"
    try:
        charge()
    except CircuitOpen as exc:
        assert exc.retry_after == 30.0
    ```
    """

    def __init__(
        self,
        *,
        name: str = "breaker",
        failure_rate_threshold: float = 0.5,
        window: int = 20,
        window_type: Literal["count", "time"] = "count",
        minimum_calls: int = 10,
        slow_call_duration: float | None = None,
        slow_call_rate_threshold: float = 1.0,
        cooldown: float = 30.0,
        trial_calls: int = 3,
        on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        ignore: type[BaseException] | tuple[type[BaseException], ...] = (),
        shared: SharedBreakerState | None = None,
        sync_interval: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
        listeners: Listeners | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError("name", name, "a non-empty string")
        self.name = name
        self.policy = BreakerPolicy(
            failure_rate_threshold=failure_rate_threshold,
            window=window,
            window_type=window_type,
            minimum_calls=minimum_calls,
            slow_call_duration=slow_call_duration,
            slow_call_rate_threshold=slow_call_rate_threshold,
            cooldown=cooldown,
            trial_calls=trial_calls,
        )
        self._failure_on = exception_types("on", on)
        self._ignore = exception_types("ignore", ignore) if ignore != () else ()
        if not isinstance(sync_interval, (int, float)) or sync_interval < 0:
            raise ConfigurationError("sync_interval", sync_interval, "seconds >= 0")
        self._shared = shared
        self._sync_interval = float(sync_interval)
        self._next_sync = 0.0
        self._clock = clock
        self._listeners = default_listeners if listeners is None else listeners
        self._lock = threading.Lock()
        self._core = BreakerCore(self.policy, clock)
        # The duration of a call is measured only when something reads it.
        self._timed = slow_call_duration is not None

    # ----------------------------------------------------------------- state
    @property
    def state(self) -> BreakerStateName:
        """``"closed"``, ``"open"`` or ``"half_open"`` (an open breaker whose period is
        over reports ``"half_open"``)."""
        with self._lock:
            adopted = self._sync_shared()
            changed = self._core.refresh()
            state = self._core.state
        if adopted:
            self._emit_transition(OPEN)
        if changed:
            self._emit_transition(changed)
        return state

    def retry_after(self) -> float:
        """Seconds until the breaker lets a call through (0.0 unless open)."""
        with self._lock:
            return self._core.retry_after()

    def metrics(self) -> dict[str, float | int | str]:
        """A snapshot: state, calls/failures/slow calls in the window, their rates."""
        with self._lock:
            calls, failures, slows = self._core.window_counts()
            return {
                "state": self._core.state,
                "calls": calls,
                "failures": failures,
                "slow_calls": slows,
                "failure_rate": failures / calls if calls else 0.0,
                "slow_rate": slows / calls if calls else 0.0,
                "retry_after": self._core.retry_after(),
            }

    def reset(self) -> None:
        """Close the breaker and empty its window (also in the shared store)."""
        with self._lock:
            self._core.close()
        self._clear_shared()

    def trip(self) -> None:
        """Open the breaker now, as if its failure threshold had been reached."""
        with self._lock:
            self._core.trip()
        self._after_transition(OPEN)

    # ------------------------------------------------------------- hot path
    def _before(self) -> None:
        core = self._core
        if core.state == CLOSED and self._shared is None:
            return
        with self._lock:
            before = core.state
            self._sync_shared()
            wait = core.permit()
            changed = core.state if core.state != before else None
        if changed:
            self._emit_transition(changed)
        if wait is not None:
            if self._listeners.active:
                self._listeners.emit(BreakerRejected(source=self.name, retry_after=wait))
            raise CircuitOpen(self.name, wait)

    def _record(self, failed: bool, duration: float) -> None:
        with self._lock:
            if failed or self._timed:
                changed = self._core.record(failed, duration)
            else:
                changed = self._core.record_success()
        if changed:
            self._after_transition(changed)

    def _on_error(self, exc: BaseException, duration: float) -> None:
        if isinstance(exc, self._ignore) or not isinstance(exc, Exception):
            with self._lock:
                self._core.release()
            return
        self._record(isinstance(exc, self._failure_on), duration)

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call `fn(*args, **kwargs)` through the breaker.

        Raises:
            CircuitOpen: the breaker is open; `fn` was not called.
        """
        if self._timed:
            return self._call_timed(fn, *args, **kwargs)
        core = self._core
        if core.state != CLOSED or self._shared is not None:
            self._before()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._on_error(exc, 0.0)
            raise
        # the path every healthy call takes: one lock, one O(1) window update
        with self._lock:
            changed = core.record_success()
        if changed:
            self._after_transition(changed)
        return result

    def _call_timed(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        self._before()
        clock = self._clock
        start = clock.monotonic()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._on_error(exc, clock.monotonic() - start)
            raise
        self._record(False, clock.monotonic() - start)
        return result

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await `fn(*args, **kwargs)` through the breaker (see `call`)."""
        self._before()
        start = self._clock.monotonic() if self._timed else 0.0
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._on_error(exc, self._clock.monotonic() - start if self._timed else 0.0)
            raise
        self._record(False, self._clock.monotonic() - start if self._timed else 0.0)
        return result

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate `fn` (``def`` or ``async def``) so every call goes through the breaker."""
        return decorate(fn, self.call, self.acall)

    # ------------------------------------------------------ transitions
    def _after_transition(self, state: BreakerStateName) -> None:
        if state == OPEN:
            self._publish_open()
        elif state == CLOSED:
            self._clear_shared()
        self._emit_transition(state)

    def _emit_transition(self, state: BreakerStateName) -> None:
        if not self._listeners.active:
            return
        core = self._core
        if state == OPEN:
            event: BreakerOpened | BreakerHalfOpened | BreakerClosed = BreakerOpened(
                source=self.name,
                failure_rate=core.last_failure_rate,
                slow_rate=core.last_slow_rate,
                wait=core.retry_after(),
            )
        elif state == HALF_OPEN:
            event = BreakerHalfOpened(source=self.name, trial_calls=self.policy.trial_calls)
        else:
            event = BreakerClosed(source=self.name)
        self._listeners.emit(event)

    # ------------------------------------------------------ shared store
    def _sync_shared(self) -> bool:
        """Adopt an "open" published by another process (call with the lock held).

        Returns True if the breaker opened because of it (the caller emits the event).
        """
        shared = self._shared
        if shared is None or self._core.state != CLOSED:
            return False
        now = self._clock.monotonic()
        if now < self._next_sync:
            return False
        self._next_sync = now + self._sync_interval
        try:
            until = shared.read_open(self.name)
        except Exception as exc:  # noqa: BLE001 - a broken store must not break the breaker
            _log.warning("breaker %r: reading the shared state failed: %s", self.name, exc)
            return False
        if until is None:
            return False
        remaining = until - self._clock.time()
        if remaining <= 0:
            return False
        self._core.last_failure_rate = self._core.last_slow_rate = 0.0
        self._core.trip(now + remaining)
        return True

    def _publish_open(self) -> None:
        if self._shared is None:
            return
        try:
            self._shared.publish_open(self.name, self._clock.time() + self.retry_after())
        except Exception as exc:  # noqa: BLE001
            _log.warning("breaker %r: publishing 'open' failed: %s", self.name, exc)

    def _clear_shared(self) -> None:
        if self._shared is None:
            return
        try:
            self._shared.clear(self.name)
        except Exception as exc:  # noqa: BLE001
            _log.warning("breaker %r: clearing the shared state failed: %s", self.name, exc)

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self.name!r}, state={self._core.state!r})"
