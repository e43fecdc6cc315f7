"""`LoadBalancer`: spread calls over the instances of a service, client side.

```python
from scalepatterns.resilience import LoadBalancer

lb = LoadBalancer(["http://a:8000", "http://b:8000"], strategy="round_robin")
with lb.pick() as endpoint:          # records the outcome and the latency
    assert endpoint == "http://a:8000"
```

Passive health: an endpoint is ejected (gets no traffic) after `failure_threshold`
consecutive failures, or once its failure rate over the last `failure_window` calls
reaches `eject_failure_rate`. After `cooldown` seconds (longer after each ejection in
a row, up to `max_cooldown`) it gets one trial call: success re-admits it, failure
ejects it again. At most `max_ejected` (a share) of the endpoints are ejected at once.
The failures in a row, the cool-downs and the trial are the shared core's
(`scalepatterns._cooldown`); the failure share and `max_ejected` are the balancer's own.

Active health: `check_health()` (or `await acheck_health()`, or the background thread
of `start_health_checks(interval)`) runs your `health_check(endpoint)`; an endpoint that
fails it takes no traffic until it passes again.
"""

from __future__ import annotations

import collections
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

from scalepatterns._checks import exception_types
from scalepatterns._cooldown import CooldownPolicy, CooldownState
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.resilience._callables import (
    is_coroutine_callable,
    refuse_awaitable,
)
from scalepatterns.resilience.errors import NoHealthyEndpoint
from scalepatterns.resilience.events import EndpointEjected, EndpointReadmitted
from scalepatterns.resilience.strategies import Strategy, resolve_strategy

_log = logging.getLogger("scalepatterns.resilience")

__all__ = ["EndpointStats", "LoadBalancer"]

T = TypeVar("T")

EndpointState = Literal["up", "ejected", "trial", "unhealthy"]


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """A snapshot of one endpoint, from `LoadBalancer.stats()`."""

    name: str
    state: EndpointState
    weight: int
    active: int
    calls: int
    failures: int
    ewma_latency: float
    consecutive_failures: int
    ejections: int


class _Endpoint(Generic[T]):
    """One endpoint's live figures (what strategies read: name, weight, active, ewma)."""

    __slots__ = (
        "active",
        "calls",
        "ejection",
        "ejections",
        "endpoint",
        "ewma",
        "failures",
        "healthy",
        "name",
        "recent",
        "weight",
    )

    def __init__(self, endpoint: T, weight: int, window: int, policy: CooldownPolicy) -> None:
        self.endpoint = endpoint
        self.name = str(endpoint)
        self.weight = weight
        self.active = 0
        self.calls = 0
        self.failures = 0
        self.ewma = 0.0
        self.recent: collections.deque[bool] = collections.deque(maxlen=window)
        # failures in a row, the ejection (a cool-down) and its one trial call
        self.ejection = CooldownState(policy)
        self.ejections = 0
        self.healthy = True  # the active health check's last verdict

    def state(self, now: float) -> EndpointState:
        if not self.healthy:
            return "unhealthy"
        ejection = self.ejection
        if not ejection.out:
            return "up"
        return "ejected" if ejection.cooling(now) or ejection.trials else "trial"


class _Pick(Generic[T]):
    """``with lb.pick() as endpoint:``: chooses on enter, records outcome and latency on exit."""

    __slots__ = ("_balancer", "_key", "_start", "_target")

    def __init__(self, balancer: LoadBalancer[T], key: str | None) -> None:
        self._balancer = balancer
        self._key = key
        self._target: _Endpoint[T] | None = None
        self._start = 0.0

    def __enter__(self) -> T:
        balancer = self._balancer
        self._target = target = balancer._choose(self._key)
        self._start = balancer._clock.monotonic()
        return target.endpoint

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        target = self._target
        if target is None:
            return
        self._target = None
        balancer = self._balancer
        failed = exc is not None and isinstance(exc, balancer._failure_on)
        ignored = exc is not None and not failed
        balancer._release(target, failed, ignored, balancer._clock.monotonic() - self._start)

    async def __aenter__(self) -> T:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class LoadBalancer(Generic[T]):
    """Client-side load balancing with passive and active health.

    Args:
        endpoints: the instances (any objects; ``str(endpoint)`` names them and must be
            unique), or a mapping ``{endpoint: weight}`` with integer weights >= 1.
        strategy: ``"round_robin"``, ``"weighted_round_robin"``,
            ``"least_connections"``, ``"consistent_hash"`` (pick with a `key`),
            ``"power_of_two"`` (power of two choices on EWMA latency), or a strategy
            object from `scalepatterns.resilience.strategies`.
        name: low-cardinality name for events and errors.
        failure_threshold: consecutive failures that eject an endpoint (None: never).
        eject_failure_rate: failure share over `failure_window` calls that ejects an
            endpoint once `min_calls` have been seen (None: not used).
        failure_window: calls remembered per endpoint for the failure rate.
        min_calls: calls needed before the failure rate is judged.
        cooldown: seconds of the first ejection; doubled for each ejection in a row.
        max_cooldown: the longest ejection.
        max_ejected: share of endpoints (0..1) that may be ejected at once, rounded down;
            at least one ejection is allowed when there are two endpoints or more (a lone
            endpoint is never ejected unless ``max_ejected=1``).
        health_check: ``fn(endpoint) -> bool`` (or an ``async def``) for active checks.
        on: exceptions inside ``with lb.pick()`` that count as the endpoint's
            failure; others release it without counting.
        ewma_alpha: weight of the newest latency sample in the EWMA (0 < alpha <= 1).
        clock: time source.
        listeners: event registry.

    Raises:
        ConfigurationError: no endpoints, duplicate names, bad weights or thresholds.
    """

    def __init__(
        self,
        endpoints: Sequence[T] | Mapping[T, int],
        strategy: str | Strategy = "round_robin",
        *,
        name: str = "balancer",
        failure_threshold: int | None = 5,
        eject_failure_rate: float | None = None,
        failure_window: int = 20,
        min_calls: int = 10,
        cooldown: float = 10.0,
        max_cooldown: float = 300.0,
        max_ejected: float = 0.5,
        health_check: Callable[[T], bool | Awaitable[bool]] | None = None,
        on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        ewma_alpha: float = 0.3,
        clock: Clock = SYSTEM_CLOCK,
        listeners: Listeners | None = None,
    ) -> None:
        weights = _weights(endpoints)
        policy = CooldownPolicy(failure_threshold, cooldown, max_cooldown=max_cooldown)
        if eject_failure_rate is not None and not 0 < eject_failure_rate <= 1:
            raise ConfigurationError(
                "eject_failure_rate", eject_failure_rate, "a share in (0, 1] or None"
            )
        if not isinstance(failure_window, int) or failure_window < 1:
            raise ConfigurationError("failure_window", failure_window, "an integer >= 1")
        if not isinstance(min_calls, int) or not 1 <= min_calls <= failure_window:
            raise ConfigurationError("min_calls", min_calls, f"an integer in 1..{failure_window}")
        if not isinstance(max_ejected, (int, float)) or not 0 <= max_ejected <= 1:
            raise ConfigurationError("max_ejected", max_ejected, "a share between 0 and 1")
        if not isinstance(ewma_alpha, (int, float)) or not 0 < ewma_alpha <= 1:
            raise ConfigurationError("ewma_alpha", ewma_alpha, "a weight in (0, 1]")
        if health_check is not None and not callable(health_check):
            raise ConfigurationError("health_check", health_check, "a callable taking an endpoint")
        types = exception_types("on", on)
        self.name = name
        self._strategy = resolve_strategy(strategy)
        self._endpoints = [_Endpoint(e, w, failure_window, policy) for e, w in weights]
        self._eject_rate = eject_failure_rate
        self._min_calls = min_calls
        count = len(self._endpoints)
        floor = 1 if count > 1 and max_ejected > 0 else 0
        self._max_ejected = max(floor, int(max_ejected * count))
        self._health_check = health_check
        self._failure_on: tuple[type[BaseException], ...] = types
        self._alpha = float(ewma_alpha)
        self._clock = clock
        self._listeners = default_listeners if listeners is None else listeners
        self._lock = threading.Lock()
        # Candidates are recomputed only when health changes or an ejection may end.
        self._candidates: list[_Endpoint[T]] = list(self._endpoints)
        self._recompute_at: float | None = None

    # ------------------------------------------------------------- picking
    def pick(self, key: str | None = None) -> _Pick[T]:
        """A context manager choosing an endpoint: ``with lb.pick(key) as endpoint:``.

        An exception of `on` raised inside the block counts as the endpoint's
        failure; the block's duration is its latency sample.

        Raises:
            NoHealthyEndpoint: (on enter) every endpoint is ejected or unhealthy.
        """
        return _Pick(self, key)

    def _choose(self, key: str | None) -> _Endpoint[T]:
        with self._lock:
            if self._recompute_at is not None and self._clock.monotonic() >= self._recompute_at:
                self._refresh_candidates()
            candidates = self._candidates
            if not candidates:
                raise NoHealthyEndpoint(self.name, self._next_trial_in())
            target = self._strategy.select(candidates, key)
            assert isinstance(target, _Endpoint)
            target.active += 1
            ejection = target.ejection
            if ejection.out:  # this call is its trial (it was a candidate: due)
                ejection.take_trial(self._clock.monotonic())
                self._refresh_candidates()
            return target

    def _refresh_candidates(self) -> None:
        now = self._clock.monotonic()
        candidates = []
        wake: float | None = None
        for target in self._endpoints:
            if not target.healthy:
                continue
            ejection = target.ejection
            if not ejection.out or ejection.trial_due(now):
                candidates.append(target)  # in use, or due for its trial
            elif not ejection.trials and (wake is None or ejection.until < wake):
                wake = ejection.until
        self._candidates = candidates
        self._recompute_at = wake

    def _next_trial_in(self) -> float | None:
        now = self._clock.monotonic()
        waits = [
            t.ejection.remaining(now)
            for t in self._endpoints
            if t.healthy and t.ejection.out and not t.ejection.trials
        ]
        return min(waits) if waits else None

    def _release(self, target: _Endpoint[T], failed: bool, ignored: bool, latency: float) -> None:
        event: EndpointEjected | EndpointReadmitted | None = None
        ejection = target.ejection
        with self._lock:
            target.active -= 1
            if ignored:
                if ejection.trials:
                    ejection.release_trial()
                    self._refresh_candidates()
                return
            target.calls += 1
            target.ewma = (
                latency
                if target.calls == 1
                else target.ewma + self._alpha * (latency - target.ewma)
            )
            target.recent.append(failed)
            if failed:
                target.failures += 1
                due = ejection.failed()
                if due == "again":
                    event = self._eject(target, "trial_failed", force=True)
                else:
                    reason = "consecutive_failures" if due else self._failure_share(target)
                    if reason is not None:
                        event = self._eject(target, reason)
            elif (ejection.failures or ejection.out) and ejection.succeeded():
                target.recent.clear()  # the trial passed
                self._refresh_candidates()
                event = EndpointReadmitted(source=self.name, endpoint=target.name)
        if event is not None and self._listeners.active:
            self._listeners.emit(event)

    def _failure_share(self, target: _Endpoint[T]) -> str | None:
        """``"failure_rate"`` if the endpoint, in use, fails too large a share of calls."""
        if target.ejection.out:
            return None
        recent = target.recent
        if (
            self._eject_rate is not None
            and len(recent) >= self._min_calls
            and sum(recent) / len(recent) >= self._eject_rate
        ):
            return "failure_rate"
        return None

    def _eject(
        self, target: _Endpoint[T], reason: str, *, force: bool = False
    ) -> EndpointEjected | None:
        if not force:
            ejected = sum(1 for t in self._endpoints if t.ejection.out)
            if ejected >= self._max_ejected:
                return None
        target.ejections += 1
        duration = target.ejection.trip(self._clock.monotonic())
        target.recent.clear()
        self._refresh_candidates()
        return EndpointEjected(
            source=self.name, endpoint=target.name, reason=reason, duration=duration
        )

    # --------------------------------------------------------- active health
    def _apply_health(
        self, target: _Endpoint[T], healthy: bool
    ) -> EndpointEjected | EndpointReadmitted | None:
        with self._lock:
            if healthy == target.healthy and not (healthy and target.ejection.out):
                return None
            target.healthy = healthy
            if healthy:
                target.ejection.reset()
                target.recent.clear()
                event: EndpointEjected | EndpointReadmitted = EndpointReadmitted(
                    source=self.name, endpoint=target.name
                )
            else:
                event = EndpointEjected(
                    source=self.name, endpoint=target.name, reason="health_check", duration=0.0
                )
            self._refresh_candidates()
            return event

    def check_health(self) -> dict[str, bool]:
        """Run the sync `health_check` on every endpoint now; returns name -> healthy.

        A check that raises counts as unhealthy. An endpoint that passes is re-admitted
        at once, even if passive health had ejected it.
        """
        check = self._require_check()
        results: dict[str, bool] = {}
        for target in self._endpoints:
            try:
                verdict: object = check(target.endpoint)
            except Exception:  # noqa: BLE001 - a failing check means unhealthy
                verdict = False
            refuse_awaitable(verdict, "an async health_check needs `await lb.acheck_health()`")
            healthy = bool(verdict)
            results[target.name] = healthy
            self._emit(self._apply_health(target, healthy))
        return results

    async def acheck_health(self) -> dict[str, bool]:
        """Like `check_health`, awaiting an ``async def`` health check."""
        check = self._require_check()
        results: dict[str, bool] = {}
        for target in self._endpoints:
            try:
                verdict = check(target.endpoint)
                if inspect.isawaitable(verdict):
                    verdict = await verdict
                healthy = bool(verdict)
            except Exception:  # noqa: BLE001
                healthy = False
            results[target.name] = healthy
            self._emit(self._apply_health(target, healthy))
        return results

    def start_health_checks(self, interval: float) -> Callable[[], None]:
        """Run `check_health` every `interval` seconds on a daemon thread.

        Returns a function that stops the thread (and waits for it).
        """
        if is_coroutine_callable(self._require_check()):
            raise TypeError(
                "an async health_check can't run on a thread: schedule "
                "`await lb.acheck_health()` on your event loop instead"
            )
        if not isinstance(interval, (int, float)) or interval <= 0:
            raise ConfigurationError("interval", interval, "seconds > 0")
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                try:
                    self.check_health()
                except Exception:  # noqa: BLE001 - a listener error must not end the checks
                    _log.exception("health checks of %s failed; next in %ss", self.name, interval)
                stop.wait(interval)

        thread = threading.Thread(target=loop, name=f"health-{self.name}", daemon=True)
        thread.start()

        def stopper() -> None:
            stop.set()
            thread.join()

        return stopper

    def _require_check(self) -> Callable[[T], bool | Awaitable[bool]]:
        if self._health_check is None:
            raise ConfigurationError("health_check", None, "a function, to run health checks")
        return self._health_check

    def _emit(self, event: EndpointEjected | EndpointReadmitted | None) -> None:
        if event is not None and self._listeners.active:
            self._listeners.emit(event)

    # ---------------------------------------------------------------- state
    def stats(self) -> dict[str, EndpointStats]:
        """Every endpoint's figures, by name."""
        with self._lock:
            now = self._clock.monotonic()
            return {
                t.name: EndpointStats(
                    name=t.name,
                    state=t.state(now),
                    weight=t.weight,
                    active=t.active,
                    calls=t.calls,
                    failures=t.failures,
                    ewma_latency=t.ewma,
                    consecutive_failures=t.ejection.failures,
                    ejections=t.ejections,
                )
                for t in self._endpoints
            }

    @property
    def endpoints(self) -> list[T]:
        """All endpoints, in the order given."""
        return [t.endpoint for t in self._endpoints]

    def __repr__(self) -> str:
        return f"LoadBalancer({self.name!r}, {len(self._endpoints)} endpoints, {self._strategy!r})"


def _weights(endpoints: Sequence[T] | Mapping[T, int]) -> list[tuple[T, int]]:
    if isinstance(endpoints, Mapping):
        pairs: list[tuple[T, Any]] = list(endpoints.items())
    elif isinstance(endpoints, (str, bytes)) or not isinstance(endpoints, Sequence):
        raise ConfigurationError(
            "endpoints", endpoints, "a sequence of endpoints or {endpoint: weight}"
        )
    else:
        pairs = [(e, 1) for e in endpoints]
    if not pairs:
        raise ConfigurationError("endpoints", endpoints, "at least one endpoint")
    names = [str(e) for e, _ in pairs]
    if len(set(names)) != len(names):
        raise ConfigurationError("endpoints", names, "endpoints with distinct str() names")
    for endpoint, weight in pairs:
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
            raise ConfigurationError(f"weight of {str(endpoint)!r}", weight, "an integer >= 1")
    return pairs
