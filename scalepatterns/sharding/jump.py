"""`JumpHash`: Lamping & Veach's jump consistent hash for numbered shards."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from scalepatterns.errors import ConfigurationError
from scalepatterns.sharding._keys import (
    Key,
    check_node,
    check_weight,
    hash64,
    key_bytes,
    normalize_nodes,
)
from scalepatterns.sharding.errors import EmptyPlacement

__all__ = ["JumpHash", "jump_hash"]

_MASK64 = (1 << 64) - 1


def jump_hash(key: int, buckets: int) -> int:
    """The bucket in ``range(buckets)`` for a 64-bit `key` (Lamping & Veach, 2014).

    Growing from n to n+1 buckets moves exactly the keys that land in bucket n: about
    1/(n+1) of them. Needs no memory and no ring.
    """
    if buckets < 1:
        raise ValueError("jump_hash needs at least one bucket")
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK64
        j = int((b + 1) * (2147483648.0 / ((key >> 33) + 1)))
    return b


class JumpHash:
    """Jump consistent hashing over an ordered list of shards.

    The i-th node is bucket i. Nodes can be appended, and only the last one removed
    (jump hash numbers its buckets; removing a middle one would renumber the rest). No
    weights. The key's 64-bit hash comes from MD5, stable across processes.

    Args:
        nodes: the node ids in bucket order, or a count n for nodes ``"0"``..``"n-1"``.

    ```python
    from scalepatterns.sharding import JumpHash

    shards = JumpHash(4)
    assert shards.nodes == ("0", "1", "2", "3")
    assert shards.node_for("alice") in shards.nodes
    ```
    """

    __slots__ = ("_lock", "_nodes")

    def __init__(self, nodes: Iterable[str] | int) -> None:
        if isinstance(nodes, int):
            if isinstance(nodes, bool) or nodes < 0:
                raise ConfigurationError("nodes", nodes, "a count >= 0 or a list of node ids")
            names: Iterable[str] = [str(i) for i in range(nodes)]
        else:
            names = nodes
        self._nodes: tuple[str, ...] = tuple(normalize_nodes(names, weights_allowed=False))
        self._lock = threading.Lock()

    @property
    def nodes(self) -> tuple[str, ...]:
        return self._nodes

    def node_for(self, key: Key) -> str:
        """The node owning `key`; raises `EmptyPlacement` with no node."""
        nodes = self._nodes
        if not nodes:
            raise EmptyPlacement("JumpHash")
        data = key.encode() if type(key) is str else key_bytes(key)
        return nodes[jump_hash(hash64(data), len(nodes))]

    def add_node(self, node: str, weight: float = 1) -> None:
        """Append `node` as the next bucket; about 1/(n+1) of the keys move to it."""
        check_node(node)
        check_weight(weight, weights_allowed=False)
        with self._lock:
            if node in self._nodes:
                raise ConfigurationError("node", node, "a node that is not placed yet")
            self._nodes = (*self._nodes, node)

    def remove_node(self, node: str) -> None:
        """Remove the last node (only its keys move); any other node is refused."""
        with self._lock:
            if not self._nodes or self._nodes[-1] != node:
                raise ConfigurationError(
                    "node",
                    node,
                    f"the last node ({self._nodes[-1] if self._nodes else 'none'}): jump hash "
                    "can only shrink from the end; use Rendezvous or HashRing to remove any node",
                )
            self._nodes = self._nodes[:-1]

    def __repr__(self) -> str:
        return f"JumpHash({list(self._nodes)!r})"
