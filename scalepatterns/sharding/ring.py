"""`HashRing`: consistent hashing placed exactly like uhashring, with faster lookups.

Each node gets ``vnodes x weight`` points on a ring of MD5 values (the points of node
``"a"`` are ``md5("a-0")``, ``md5("a-1")``...); a key belongs to the node of the first point
after ``md5(key)``, wrapping around. These are uhashring's rules, so for the same nodes,
weights and vnodes a key lands on the same node as with ``uhashring.HashRing(nodes)``
(``ketama=True``: as with ``uhashring.HashRing(nodes, hash_fn="ketama")``).

Differences from uhashring, on purpose:

- a node with a small weight keeps at least one point (uhashring's ketama mode rounds it
  down to zero points and silently drops the node); weights may be fractional;
- weights <= 0, duplicate nodes and empty node ids are refused;
- membership changes build a new immutable snapshot and swap it in one assignment, so a
  lookup running in another thread always sees a complete ring;
- a lookup is one MD5, one `bisect` over the sorted 16-byte digests (bytes compare like the
  big-endian integers uhashring compares) and one list index;
- `bytes` keys hash their raw bytes (uhashring hashes their ``repr``).
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping

from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.sharding._keys import (
    Key,
    check_node,
    check_weight,
    key_bytes,
    md5,
    nodes_repr,
    normalize_nodes,
)
from scalepatterns.sharding.errors import EmptyPlacement
from scalepatterns.sharding.events import NodeAdded, NodeRemoved

__all__ = ["HashRing"]

_DEFAULT_VNODES = 160
_KETAMA_VNODES = 40
_KETAMA_REPLICAS = 4


class _Snapshot:
    """An immutable ring: sorted points and, at the same index, their owners.

    `owners` has one more entry than `points`: the owner of the first point again, so a
    key hashing past the last point wraps around without a branch.
    """

    __slots__ = ("owners", "points", "weights")

    def __init__(
        self, points: list[bytes] | list[int], owners: list[str], weights: dict[str, float]
    ) -> None:
        self.points = points
        self.owners = owners
        self.weights = weights


def _meta_points(node: str, count: int) -> list[tuple[bytes, str]]:
    return [(md5(f"{node}-{w}".encode()).digest(), node) for w in range(count)]


class HashRing:
    """Consistent hashing (ketama style) with uhashring's placements.

    Args:
        nodes: node ids (logical shard ids, e.g. ``["users-1", "users-2"]``) or a
            ``{node: weight}`` mapping; weights are numbers > 0 (default 1).
        vnodes: points per unit of weight (uhashring's default: 160, or 40 with ketama).
        ketama: place like ``uhashring.HashRing(nodes, hash_fn="ketama")`` (32-bit points,
            four per MD5) instead of ``uhashring.HashRing(nodes)``.
        listeners: where `NodeAdded`/`NodeRemoved` go (default: the process-wide registry).

    Raises:
        ConfigurationError: duplicate or empty node ids, weights <= 0, vnodes < 1.

    ```python
    from scalepatterns.sharding import HashRing

    ring = HashRing(["users-1", "users-2", "users-3"])
    node = ring.node_for("alice")
    assert node in ring.nodes and ring.node_for("alice") == node
    ```
    """

    __slots__ = ("_ketama", "_listeners", "_lock", "_node_points", "_snap", "_vnodes")

    def __init__(
        self,
        nodes: Iterable[str] | Mapping[str, float] = (),
        *,
        vnodes: int | None = None,
        ketama: bool = False,
        listeners: Listeners | None = None,
    ) -> None:
        if vnodes is None:
            vnodes = _KETAMA_VNODES if ketama else _DEFAULT_VNODES
        if isinstance(vnodes, bool) or not isinstance(vnodes, int) or vnodes < 1:
            raise ConfigurationError("vnodes", vnodes, "an int >= 1")
        self._vnodes = vnodes
        self._ketama = bool(ketama)
        self._listeners = default_listeners if listeners is None else listeners
        self._lock = threading.Lock()
        self._node_points: dict[str, list[tuple[bytes, str]]] = {}
        self._snap = self._build(normalize_nodes(nodes))

    # -- lookups (lock-free: one read of the current snapshot) -------------------------

    def node_for(self, key: Key) -> str:
        """The node owning `key`.

        Raises:
            EmptyPlacement: the ring has no node.
            InvalidShardKey: `key` is not str, bytes, int or UUID.
        """
        snap = self._snap
        data = key.encode() if type(key) is str else key_bytes(key)
        point: bytes | int = md5(data).digest()
        if self._ketama:
            point = int.from_bytes(point[:4], "little")  # type: ignore[index,unused-ignore]
        try:
            return snap.owners[bisect_right(snap.points, point)]  # type: ignore[arg-type,unused-ignore]
        except IndexError:
            raise EmptyPlacement("HashRing") from None

    def walk(self, key: Key) -> Iterator[str]:
        """The owners of the ring's points from `key`'s position on, once around the ring.

        The first is `node_for(key)`; nodes repeat (one entry per point). Used by placements
        that look past the owner, such as `BoundedLoadRing`.
        """
        snap = self._snap
        digest = md5(key_bytes(key)).digest()
        point: bytes | int = int.from_bytes(digest[:4], "little") if self._ketama else digest
        count = len(snap.points)
        if not count:
            raise EmptyPlacement("HashRing")
        start = bisect_right(snap.points, point)  # type: ignore[arg-type,unused-ignore]
        owners = snap.owners
        for offset in range(count):
            yield owners[(start + offset) % count]

    @property
    def nodes(self) -> tuple[str, ...]:
        """The node ids, in the order they were added."""
        return tuple(self._snap.weights)

    @property
    def weights(self) -> dict[str, float]:
        """``{node: weight}`` (a copy)."""
        return dict(self._snap.weights)

    @property
    def vnodes(self) -> int:
        return self._vnodes

    def points(self) -> dict[str, int]:
        """How many ring points each node holds."""
        counts = Counter(self._snap.owners[:-1])
        return {node: counts[node] for node in self._snap.weights}

    def __len__(self) -> int:
        return len(self._snap.weights)

    def __contains__(self, node: object) -> bool:
        return node in self._snap.weights

    def __repr__(self) -> str:
        mode = ", ketama=True" if self._ketama else ""
        return f"HashRing({nodes_repr(self._snap.weights)}, vnodes={self._vnodes}{mode})"

    # -- membership (writers serialize on a lock and swap in a new snapshot) ------------

    def add_node(self, node: str, weight: float = 1) -> None:
        """Add `node` with `weight`; only keys that now belong to it move.

        Raises:
            ConfigurationError: `node` is already on the ring, or `weight` <= 0.
        """
        check_node(node)
        weight = check_weight(weight)
        with self._lock:
            weights = dict(self._snap.weights)
            if node in weights:
                raise ConfigurationError("node", node, "a node that is not on the ring yet")
            weights[node] = weight
            self._snap = self._build(weights)
        if self._listeners.active:
            self._listeners.emit(NodeAdded(source="HashRing", node=node))

    def remove_node(self, node: str) -> None:
        """Remove `node`; only its keys move (to the next points on the ring).

        Raises:
            ConfigurationError: `node` is not on the ring.
        """
        with self._lock:
            weights = dict(self._snap.weights)
            if node not in weights:
                raise ConfigurationError("node", node, f"one of {list(weights)}")
            del weights[node]
            self._node_points.pop(node, None)
            self._snap = self._build(weights)
        if self._listeners.active:
            self._listeners.emit(NodeRemoved(source="HashRing", node=node))

    def _build(self, weights: dict[str, float]) -> _Snapshot:
        if self._ketama:
            return self._build_ketama(weights)
        ring: dict[bytes, str] = {}
        for node, weight in weights.items():
            count = max(1, round(self._vnodes * weight))
            cached = self._node_points.get(node)
            if cached is None or len(cached) != count:
                cached = self._node_points[node] = _meta_points(node, count)
            ring.update(cached)
        points = sorted(ring)
        owners = [ring[p] for p in points]
        if owners:
            owners.append(owners[0])
        return _Snapshot(points, owners, weights)

    def _build_ketama(self, weights: dict[str, float]) -> _Snapshot:
        # uhashring's KetamaRing: (vnodes * len(nodes) * weight) // weight_sum groups of
        # four 32-bit points per node, built in node order; the last writer owns a point
        # two nodes share, and the sorted point list keeps both copies (as insort does).
        total = sum(weights.values())
        ring: dict[int, str] = {}
        points: list[int] = []
        for node, weight in weights.items():
            scaled = self._vnodes * len(weights) * weight
            groups = (
                scaled // total
                if isinstance(scaled, int) and isinstance(total, int)
                else (math.floor(scaled / total))
            )
            for w in range(max(1, int(groups))):
                digest = md5(f"{node}-{w}".encode()).digest()
                for replica in range(_KETAMA_REPLICAS):
                    point = int.from_bytes(digest[replica * 4 : replica * 4 + 4], "little")
                    ring[point] = node
                    points.append(point)
        points.sort()
        owners = [ring[p] for p in points]
        if owners:
            owners.append(owners[0])
        return _Snapshot(points, owners, weights)
