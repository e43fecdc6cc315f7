"""Balancing strategies: which healthy replica a new session (or transaction) pins.

A strategy is any object with ``choose(candidates) -> candidate`` or a plain callable
taking the candidates; the candidates are the replicas in rotation (`ReplicaView`s, never
empty). The router accepts the names ``"round_robin"``, ``"random"``, ``"weighted"`` and
``"least_lag"`` for the built-in ones.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from scalepatterns.errors import ConfigurationError
from scalepatterns.resilience.strategies import RoundRobin
from scalepatterns.routing.health import ReplicaView

__all__ = [
    "Balancer",
    "LeastLag",
    "RandomChoice",
    "RoundRobin",
    "Weighted",
    "resolve_balancer",
]


@runtime_checkable
class Balancer(Protocol):
    """Chooses one replica among the healthy candidates."""

    def choose(self, candidates: Sequence[ReplicaView]) -> ReplicaView: ...


class RandomChoice:
    """A uniformly random replica (pass `rng` for reproducible tests)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, candidates: Sequence[ReplicaView]) -> ReplicaView:
        return candidates[self._rng.randrange(len(candidates))]


class Weighted:
    """A random replica, in proportion to each one's weight (the router's ``weights=``)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, candidates: Sequence[ReplicaView]) -> ReplicaView:
        return self._rng.choices(candidates, weights=[c.weight for c in candidates])[0]


class LeastLag:
    """The replica with the least measured lag (bytes, then seconds); unmeasured ones last."""

    def choose(self, candidates: Sequence[ReplicaView]) -> ReplicaView:
        def key(c: ReplicaView) -> tuple[int, float, float]:
            if c.lag_bytes is None and c.lag_seconds is None:
                return (1, 0.0, 0.0)
            return (0, float(c.lag_bytes or 0), c.lag_seconds or 0.0)

        return min(candidates, key=key)


class _CallableBalancer:
    def __init__(self, fn: Callable[[Sequence[ReplicaView]], ReplicaView]) -> None:
        self._fn = fn

    def choose(self, candidates: Sequence[ReplicaView]) -> ReplicaView:
        return self._fn(candidates)


BalanceOption = str | Balancer | Callable[[Sequence[ReplicaView]], ReplicaView]

_NAMED: dict[str, Callable[[], Balancer]] = {
    "least_lag": LeastLag,
    "random": RandomChoice,
    "round_robin": RoundRobin,
    "weighted": Weighted,
}


def resolve_balancer(option: BalanceOption) -> Balancer:
    """A `Balancer` from a name, a strategy object or a plain callable."""
    if isinstance(option, str):
        factory = _NAMED.get(option)
        if factory is None:
            raise ConfigurationError("balance", option, f"one of {sorted(_NAMED)} or a Balancer")
        return factory()
    if isinstance(option, Balancer):
        return option
    if callable(option):
        return _CallableBalancer(option)
    raise ConfigurationError("balance", option, f"one of {sorted(_NAMED)} or a Balancer")
