"""Events of the sharding block (low cardinality: shard ids, never user keys)."""

from __future__ import annotations

from dataclasses import dataclass

from scalepatterns.events import Event

__all__ = ["FanOutFinished", "NodeAdded", "NodeRemoved", "RowsResharded", "ShardRouted"]


@dataclass(frozen=True, slots=True)
class ShardRouted(Event):
    """A router sent one key to `shard`."""

    shard: str


@dataclass(frozen=True, slots=True)
class NodeAdded(Event):
    """A node joined a placement; `moved` keys changed owner (bounded-load ring only)."""

    node: str
    moved: int = 0


@dataclass(frozen=True, slots=True)
class NodeRemoved(Event):
    """A node left a placement; `moved` keys changed owner (bounded-load ring only)."""

    node: str
    moved: int = 0


@dataclass(frozen=True, slots=True)
class FanOutFinished(Event):
    """A fan-out ran on `shards` shards, `failed` of which raised."""

    shards: int
    failed: int


@dataclass(frozen=True, slots=True)
class RowsResharded(Event):
    """A resharding batch copied, verified and deleted `rows` rows from `from_shard`."""

    from_shard: str
    to_shard: str
    rows: int
