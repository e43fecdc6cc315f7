"""Type-level checks of the sharding block, run by mypy --strict, never executed."""

from __future__ import annotations

from typing_extensions import assert_type

from scalepatterns.sharding import (
    BoundedLoadRing,
    HashRing,
    JumpHash,
    Placement,
    RangeShards,
    Rendezvous,
    ResizablePlacement,
    ShardRouter,
)

placements: list[Placement] = [
    HashRing(["a"]),
    JumpHash(2),
    Rendezvous(["a"]),
    BoundedLoadRing(["a"]),
    RangeShards([(None, None, "a")]),
]
resizable: list[ResizablePlacement] = [
    HashRing(["a"]),
    JumpHash(2),
    Rendezvous(["a"]),
    BoundedLoadRing(["a"]),
]
router = ShardRouter(HashRing(["a"]), {"a": 1})
assert_type(router.for_key("k"), int)
assert_type(router.fan_out(lambda shard, n: str(n)), dict[str, str])
assert_type(router.group_by_shard(["x", "y"]), dict[str, list[str]])
