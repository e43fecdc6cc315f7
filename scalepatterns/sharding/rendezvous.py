"""`Rendezvous`: weighted highest-random-weight hashing (Thaler & Ravishankar)."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping

from scalepatterns.errors import ConfigurationError
from scalepatterns.sharding._keys import (
    Key,
    check_node,
    check_weight,
    hash64,
    key_bytes,
    mix64,
    normalize_nodes,
)
from scalepatterns.sharding.errors import EmptyPlacement

__all__ = ["Rendezvous"]

_TWO53 = float(1 << 53)


class _Members:
    __slots__ = ("seeds", "uniform", "weights")

    def __init__(self, weights: dict[str, float]) -> None:
        self.weights = weights
        self.seeds = tuple((node, hash64(node.encode()), w) for node, w in weights.items())
        self.uniform = len(set(weights.values())) <= 1


class Rendezvous:
    """Each key goes to the node with the highest score ``-weight / ln(u(node, key))``.

    ``u`` is a uniform number in (0, 1) from a stable 64-bit hash of the node and the key,
    so a node's share of the keys is its share of the total weight (the logarithmic method
    of Schindelhauer & Schomaker). Adding a node moves only the keys it wins; removing one
    moves only its keys. A lookup scores every node: O(nodes), fine up to a few dozen.

    Args:
        nodes: node ids or a ``{node: weight}`` mapping (weights > 0).

    ```python
    from scalepatterns.sharding import Rendezvous

    hrw = Rendezvous({"big": 3, "small": 1})
    owners = [hrw.node_for(f"k{i}") for i in range(4000)]
    assert 0.70 < owners.count("big") / 4000 < 0.80
    ```
    """

    __slots__ = ("_lock", "_members")

    def __init__(self, nodes: Iterable[str] | Mapping[str, float] = ()) -> None:
        self._lock = threading.Lock()
        self._members = _Members(normalize_nodes(nodes))

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(self._members.weights)

    @property
    def weights(self) -> dict[str, float]:
        return dict(self._members.weights)

    def node_for(self, key: Key) -> str:
        """The node owning `key`; raises `EmptyPlacement` with no node."""
        members = self._members
        base = hash64(key.encode() if type(key) is str else key_bytes(key))
        best = ""
        if members.uniform:  # equal weights: the largest hash wins, no logarithm needed
            best_hash = -1
            for node, seed, _ in members.seeds:
                value = mix64(base ^ seed)
                if value > best_hash:
                    best, best_hash = node, value
            if not best:
                raise EmptyPlacement("Rendezvous")
            return best
        best_score = -1.0
        for node, seed, weight in members.seeds:
            unit = ((mix64(base ^ seed) >> 11) + 0.5) / _TWO53  # strictly inside (0, 1)
            score = -weight / math.log(unit)
            if score > best_score:
                best, best_score = node, score
        if not best:
            raise EmptyPlacement("Rendezvous")
        return best

    def add_node(self, node: str, weight: float = 1) -> None:
        """Add `node`; only the keys it now wins move to it."""
        check_node(node)
        weight = check_weight(weight)
        with self._lock:
            weights = dict(self._members.weights)
            if node in weights:
                raise ConfigurationError("node", node, "a node that is not placed yet")
            weights[node] = weight
            self._members = _Members(weights)

    def remove_node(self, node: str) -> None:
        """Remove `node`; only its keys move."""
        with self._lock:
            weights = dict(self._members.weights)
            if node not in weights:
                raise ConfigurationError("node", node, f"one of {list(weights)}")
            del weights[node]
            self._members = _Members(weights)

    def __repr__(self) -> str:
        return f"Rendezvous({self._members.weights!r})"
