"""The small Protocol every placement satisfies, and one that adds membership changes."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from scalepatterns.sharding._keys import Key

__all__ = ["Placement", "ResizablePlacement"]


@runtime_checkable
class Placement(Protocol):
    """Decides which node (a logical shard id) owns a key.

    `node_for` is the one method other blocks rely on (the sharded cache backend, the
    load balancer). Implementations are safe to call from many threads.
    """

    @property
    def nodes(self) -> tuple[str, ...]:
        """The node ids, in the order they were given."""
        ...

    def node_for(self, key: Key) -> str:
        """The node that owns `key`."""
        ...


@runtime_checkable
class ResizablePlacement(Placement, Protocol):
    """A placement whose nodes can be added and removed while it serves lookups."""

    def add_node(self, node: str, weight: float = 1) -> object:
        """Add `node`; only keys that now belong to it move (some placements return the
        moves)."""
        ...

    def remove_node(self, node: str) -> object:
        """Remove `node`; only its keys move."""
        ...
