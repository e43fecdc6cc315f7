"""`BoundedLoadRing`: consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam).

A plain ring can give one node far more than its share (a hot range, few nodes, a Zipf
key set). With bounded loads every node has a capacity of ``ceil((1 + epsilon) x m x
weight / total weight)`` keys, where m is the number of keys currently assigned; a key
goes to the first node at or after its ring position that is below capacity.

That needs memory of who holds what, so this placement is stateful: `assign(key)` places
a key and remembers it (again for the same key: the same node), `release(key)` forgets it,
and membership changes re-place only the keys they must. Those calls return the `Move`s
they caused, so the data can follow. `node_for` is `assign`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.sharding._keys import (
    Key,
    check_weight,
    key_bytes,
    nodes_repr,
    normalize_nodes,
)
from scalepatterns.sharding.errors import EmptyPlacement
from scalepatterns.sharding.events import NodeAdded, NodeRemoved
from scalepatterns.sharding.ring import HashRing

__all__ = ["BoundedLoadRing", "Move"]


@dataclass(frozen=True, slots=True)
class Move:
    """One key changing owner: copy its data from `source` to `target`."""

    key: Key
    source: str
    target: str


class BoundedLoadRing:
    """A consistent-hash ring where no node holds more than (1 + epsilon) x its share.

    Args:
        nodes: node ids or a ``{node: weight}`` mapping (weights > 0).
        epsilon: the allowed excess over the average load, > 0 (0.25: at most 25% above).
        vnodes: ring points per unit of weight.
        listeners: where `NodeAdded`/`NodeRemoved` go.

    ```python
    from scalepatterns.sharding import BoundedLoadRing

    ring = BoundedLoadRing(["a", "b", "c"], epsilon=0.25)
    for i in range(300):
        ring.assign(f"user:{i}")
    assert max(ring.loads().values()) <= ring.capacity("a") == 125
    moves = ring.add_node("d")          # the keys that changed owner, to copy their data
    assert all(m.source != m.target for m in moves)
    ```
    """

    def __init__(
        self,
        nodes: Iterable[str] | Mapping[str, float] = (),
        *,
        epsilon: float = 0.25,
        vnodes: int = 160,
        listeners: Listeners | None = None,
    ) -> None:
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
            raise ConfigurationError("epsilon", epsilon, "a number > 0, such as 0.25")
        weights = normalize_nodes(nodes)
        self._epsilon = float(epsilon)
        self._listeners = default_listeners if listeners is None else listeners
        self._ring = HashRing(weights, vnodes=vnodes, listeners=Listeners())
        self._weights = weights
        self._total = float(sum(weights.values()))
        self._lock = threading.RLock()
        self._owner: dict[bytes, str] = {}
        self._held: dict[str, dict[bytes, Key]] = {node: {} for node in weights}

    # -- reading ------------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(self._weights)

    @property
    def epsilon(self) -> float:
        return self._epsilon

    def capacity(self, node: str, assigned: int | None = None) -> int:
        """The most keys `node` may hold with `assigned` keys in all (default: now)."""
        count = len(self._owner) if assigned is None else assigned
        share = (1 + self._epsilon) * count * self._weights[node] / self._total
        return math.ceil(share - 1e-9)

    def loads(self) -> dict[str, int]:
        """``{node: keys held}``."""
        with self._lock:
            return {node: len(held) for node, held in self._held.items()}

    def lookup(self, key: Key) -> str | None:
        """The node holding `key`, or None if it is not assigned (no side effect)."""
        return self._owner.get(key_bytes(key))

    def __len__(self) -> int:
        return len(self._owner)

    # -- assigning ----------------------------------------------------------------------

    def assign(self, key: Key) -> str:
        """Place `key` (or return where it already is) and remember it.

        Raises:
            EmptyPlacement: there is no node.
        """
        data = key_bytes(key)
        owner = self._owner.get(data)
        if owner is not None:
            return owner
        with self._lock:
            owner = self._owner.get(data)
            if owner is not None:
                return owner
            if not self._weights:
                raise EmptyPlacement("BoundedLoadRing")
            node = self._first_with_room(data, len(self._owner) + 1)
            self._held[node][data] = key
            self._owner[data] = node
            return node

    node_for = assign

    def release(self, key: Key) -> list[Move]:
        """Forget `key`. The capacity may shrink with it: returns the keys moved to honour it."""
        data = key_bytes(key)
        with self._lock:
            node = self._owner.pop(data, None)
            if node is None:
                return []
            del self._held[node][data]
            return self._shed()

    def add_node(self, node: str, weight: float = 1) -> list[Move]:
        """Add `node`: keys whose ring position now falls on it move there (up to its
        capacity), then nodes above the lowered capacity shed keys. Returns the moves."""
        weight = check_weight(weight)
        with self._lock:
            self._ring.add_node(node, weight)
            self._weights[node] = weight
            self._total += weight
            self._held[node] = {}
            moves: list[Move] = []
            room = self.capacity(node)
            for source, held in self._held.items():
                if source == node:
                    continue
                for data, key in list(held.items()):
                    if len(self._held[node]) >= room:
                        break
                    if self._ring.node_for(data) == node:
                        self._move(data, key, source, node, moves)
            moves += self._shed()
        if self._listeners.active:
            self._listeners.emit(NodeAdded(source="BoundedLoadRing", node=node, moved=len(moves)))
        return moves

    def remove_node(self, node: str) -> list[Move]:
        """Remove `node`: its keys go to the next nodes with room. Returns the moves."""
        with self._lock:
            if node not in self._weights:
                raise ConfigurationError("node", node, f"one of {list(self._weights)}")
            if len(self._weights) == 1 and self._owner:
                raise ConfigurationError(
                    "node", node, "another node first: the last node still holds keys"
                )
            self._ring.remove_node(node)
            self._total -= self._weights.pop(node)
            orphans = self._held.pop(node)
            moves: list[Move] = []
            for data in orphans:
                del self._owner[data]
            assigned = len(self._owner) + len(orphans)  # the capacity once all are back
            for data, key in orphans.items():
                target = self._first_with_room(data, assigned)
                self._held[target][data] = key
                self._owner[data] = target
                moves.append(Move(key, node, target))
        if self._listeners.active:
            self._listeners.emit(NodeRemoved(source="BoundedLoadRing", node=node, moved=len(moves)))
        return moves

    # -- internals (called with the lock held) ------------------------------------------

    def _first_with_room(self, data: bytes, assigned: int, skip: str = "") -> str:
        for node in self._ring.walk(data):
            if node != skip and len(self._held[node]) < self.capacity(node, assigned):
                return node
        raise AssertionError("unreachable: the capacities add up to more than the keys")

    def _move(self, data: bytes, key: Key, source: str, target: str, moves: list[Move]) -> None:
        del self._held[source][data]
        self._held[target][data] = key
        self._owner[data] = target
        moves.append(Move(key, source, target))

    def _shed(self) -> list[Move]:
        moves: list[Move] = []
        assigned = len(self._owner)
        for node in list(self._held):
            held = self._held[node]
            while len(held) > self.capacity(node, assigned):
                data, key = next(reversed(held.items()))  # the most recently placed key
                target = self._first_with_room(data, assigned, skip=node)
                self._move(data, key, node, target, moves)
        return moves

    def __repr__(self) -> str:
        return f"BoundedLoadRing({nodes_repr(self._weights)}, epsilon={self._epsilon})"
