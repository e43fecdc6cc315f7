"""Comparing two placements over a key set: which keys move, from where, to where."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from scalepatterns.sharding._keys import Key
from scalepatterns.sharding.bounded import Move
from scalepatterns.sharding.placement import Placement

__all__ = ["RebalancePlan", "plan_rebalance"]


@dataclass(frozen=True)
class RebalancePlan:
    """The keys that change owner between two placements.

    Attributes:
        moves: one `Move(key, source, target)` per key that changes owner.
        total: how many keys were compared.
        routes: ``{(source, target): keys}`` for each pair that exchanges keys.
    """

    moves: list[Move]
    total: int
    routes: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def moved(self) -> int:
        return len(self.moves)

    @property
    def fraction(self) -> float:
        """Moved keys / compared keys (0.0 for no keys)."""
        return len(self.moves) / self.total if self.total else 0.0

    def by_target(self) -> dict[str, int]:
        """``{target: keys arriving}``."""
        counts: Counter[str] = Counter()
        for (_, target), count in self.routes.items():
            counts[target] += count
        return dict(counts)

    def __str__(self) -> str:
        return f"{len(self.moves)} of {self.total} keys move ({self.fraction:.2%})"


def plan_rebalance(before: Placement, after: Placement, keys: Iterable[Key]) -> RebalancePlan:
    """Compare `before` and `after` over `keys`.

    ```python
    from scalepatterns.sharding import HashRing, plan_rebalance

    keys = [f"user:{i}" for i in range(2000)]
    plan = plan_rebalance(HashRing(["a", "b", "c"]), HashRing(["a", "b", "c", "d"]), keys)
    assert {target for _, target in plan.routes} == {"d"}   # keys only move onto the new node
    assert 0.15 < plan.fraction < 0.35                      # about 1/4 of them
    ```
    """
    moves: list[Move] = []
    routes: Counter[tuple[str, str]] = Counter()
    total = 0
    for key in keys:
        total += 1
        source, target = before.node_for(key), after.node_for(key)
        if source != target:
            moves.append(Move(key, source, target))
            routes[(source, target)] += 1
    return RebalancePlan(moves, total, dict(routes))
