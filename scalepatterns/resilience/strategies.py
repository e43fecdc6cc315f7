"""How a `LoadBalancer` chooses among the endpoints that may take a call.

A strategy is a small object with ``select(candidates, key)``; it sees the available
endpoints' live figures (weight, calls in flight, EWMA latency) and returns one. All
strategies are deterministic given their `rng`, which makes them property-testable.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

from scalepatterns.errors import ConfigurationError

__all__ = [
    "ConsistentHash",
    "LeastConnections",
    "NodeLocator",
    "PowerOfTwoChoices",
    "RoundRobin",
    "Strategy",
    "Target",
    "WeightedRoundRobin",
]


C = TypeVar("C")


class Target(Protocol):
    """What a strategy may read about an endpoint."""

    @property
    def name(self) -> str: ...

    @property
    def weight(self) -> int: ...

    @property
    def active(self) -> int: ...

    @property
    def ewma(self) -> float: ...


class Strategy(Protocol):
    """Chooses one of `candidates` (never empty) for a call, optionally by `key`."""

    def select(self, candidates: Sequence[Target], key: str | None) -> Target: ...


class RoundRobin:
    """Each candidate in turn: the load balancer's endpoints (`select`), and the read/write
    router's replicas (`choose`): one strategy for both blocks."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def select(self, candidates: Sequence[C], key: str | None = None) -> C:
        index = self._next % len(candidates)
        self._next = index + 1
        return candidates[index]

    def choose(self, candidates: Sequence[C]) -> C:
        return self.select(candidates)


class WeightedRoundRobin:
    """Smooth weighted round-robin (nginx): picks spread evenly in proportion to weight.

    With weights 5, 1, 1 the order is a a b a c a a, never a a a a a b c.
    """

    __slots__ = ("_current",)

    def __init__(self) -> None:
        self._current: dict[str, int] = {}

    def select(self, candidates: Sequence[Target], key: str | None) -> Target:
        current = self._current
        total = 0
        best: Target | None = None
        best_value = 0
        for target in candidates:
            value = current.get(target.name, 0) + target.weight
            current[target.name] = value
            total += target.weight
            if best is None or value > best_value:
                best, best_value = target, value
        assert best is not None  # candidates is never empty
        current[best.name] = best_value - total
        return best


class LeastConnections:
    """The endpoint with the fewest calls in flight (ties taken in turn)."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def select(self, candidates: Sequence[Target], key: str | None) -> Target:
        fewest = min(target.active for target in candidates)
        ties = [target for target in candidates if target.active == fewest]
        index = self._next % len(ties)
        self._next += 1
        return ties[index]


class NodeLocator(Protocol):
    """A consistent-hash ring: the node (by name) that owns `key`."""

    def node_for(self, key: str) -> str: ...


def _hash_ring(weights: Mapping[str, int]) -> NodeLocator:
    """The sharding block's `HashRing` (uhashring's placements), with its events muted:
    the balancer rebuilds rings as endpoints come and go, which is not ring membership news.
    """
    from scalepatterns.events import Listeners
    from scalepatterns.sharding.ring import HashRing

    return HashRing(dict(weights), listeners=Listeners())


RingFactory = Callable[[Mapping[str, int]], NodeLocator]


class ConsistentHash:
    """The same key goes to the same endpoint (the "IP hash" of load balancers).

    Built on a consistent-hash ring of the available endpoints, weighted: when an
    endpoint is ejected only its keys move, and they come back when it is re-admitted.
    A call without a key falls back to round-robin.

    Args:
        ring_factory: builds a `NodeLocator` from ``{endpoint name: weight}``
            (default: `scalepatterns.sharding.HashRing`).
    """

    __slots__ = ("_factory", "_fallback", "_rings")

    def __init__(self, ring_factory: RingFactory | None = None) -> None:
        self._factory: RingFactory = ring_factory or _hash_ring
        self._rings: dict[frozenset[str], NodeLocator] = {}
        self._fallback = RoundRobin()

    def select(self, candidates: Sequence[Target], key: str | None) -> Target:
        if key is None:
            return self._fallback.select(candidates, None)
        names = frozenset(target.name for target in candidates)
        ring = self._rings.get(names)
        if ring is None:
            if len(self._rings) > 64:  # membership churn: keep the cache bounded
                self._rings.clear()
            ring = self._rings[names] = self._factory({t.name: t.weight for t in candidates})
        owner = ring.node_for(key)
        for target in candidates:
            if target.name == owner:
                return target
        raise LookupError(f"the ring placed a key on unknown endpoint {owner!r}")


class PowerOfTwoChoices:
    """Two endpoints drawn at random; the one with the lower load-weighted EWMA latency
    (``ewma * (calls in flight + 1)``) wins. Unmeasured endpoints score 0, so they get
    traffic and a measurement quickly.

    Args:
        rng: random source (seed it in tests).
    """

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def select(self, candidates: Sequence[Target], key: str | None) -> Target:
        count = len(candidates)
        if count == 1:
            return candidates[0]
        first = self._rng.randrange(count)
        second = self._rng.randrange(count - 1)
        if second >= first:
            second += 1
        a, b = candidates[first], candidates[second]
        return a if a.ewma * (a.active + 1) <= b.ewma * (b.active + 1) else b


_NAMED: dict[str, Callable[[], Strategy]] = {
    "round_robin": RoundRobin,
    "weighted_round_robin": WeightedRoundRobin,
    "least_connections": LeastConnections,
    "consistent_hash": ConsistentHash,
    "power_of_two": PowerOfTwoChoices,
}


def resolve_strategy(strategy: str | Strategy) -> Strategy:
    """A strategy object from itself or one of the names in `_NAMED`."""
    if isinstance(strategy, str):
        factory = _NAMED.get(strategy)
        if factory is None:
            raise ConfigurationError("strategy", strategy, f"one of {sorted(_NAMED)}")
        return factory()
    if not callable(getattr(strategy, "select", None)):
        raise ConfigurationError("strategy", strategy, "a strategy name or an object with select()")
    return strategy
