"""Shard routing: placements that decide which shard owns a key, and a router to the shard.

Placements (all with ``node_for(key)`` and ``nodes``): `HashRing` (ketama consistent
hashing, uhashring's placements, faster), `JumpHash`, `Rendezvous`, `BoundedLoadRing`,
`RangeShards`. `ShardRouter` maps shard ids to resources and fans out; `plan_rebalance`
says which keys a placement change moves. The SQLAlchemy (`ShardedSession`,
`AsyncShardedSession`, `Resharder`) and Redis (`ShardedRedis`, `AsyncShardedRedis`)
adapters load their driver only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scalepatterns._deps import lazy_attributes
from scalepatterns.sharding._keys import Key
from scalepatterns.sharding.bounded import BoundedLoadRing, Move
from scalepatterns.sharding.errors import (
    EmptyPlacement,
    FanOutError,
    InvalidShardKey,
    ReshardError,
    ShardingError,
    ShardUnavailable,
)
from scalepatterns.sharding.events import (
    FanOutFinished,
    NodeAdded,
    NodeRemoved,
    RowsResharded,
    ShardRouted,
)
from scalepatterns.sharding.jump import JumpHash, jump_hash
from scalepatterns.sharding.placement import Placement, ResizablePlacement
from scalepatterns.sharding.ranges import RangeShards
from scalepatterns.sharding.rebalance import RebalancePlan, plan_rebalance
from scalepatterns.sharding.rendezvous import Rendezvous
from scalepatterns.sharding.ring import HashRing
from scalepatterns.sharding.router import ShardRouter, SkewReport, merge_sorted, skew_report

if TYPE_CHECKING:
    from scalepatterns.sharding.reshard import Resharder, ReshardReport
    from scalepatterns.sharding.sharded_redis import AsyncShardedRedis, ShardedRedis
    from scalepatterns.sharding.sql import AsyncShardedSession, ShardedSession

_LAZY = {
    "AsyncShardedSession": "scalepatterns.sharding.sql",
    "ReshardReport": "scalepatterns.sharding.reshard",
    "Resharder": "scalepatterns.sharding.reshard",
    "AsyncShardedRedis": "scalepatterns.sharding.sharded_redis",
    "ShardedRedis": "scalepatterns.sharding.sharded_redis",
    "ShardedSession": "scalepatterns.sharding.sql",
}

__all__ = [
    "AsyncShardedRedis",
    "AsyncShardedSession",
    "BoundedLoadRing",
    "EmptyPlacement",
    "FanOutError",
    "FanOutFinished",
    "HashRing",
    "InvalidShardKey",
    "JumpHash",
    "Key",
    "Move",
    "NodeAdded",
    "NodeRemoved",
    "Placement",
    "RangeShards",
    "RebalancePlan",
    "Rendezvous",
    "ReshardError",
    "ReshardReport",
    "Resharder",
    "ResizablePlacement",
    "RowsResharded",
    "ShardRouted",
    "ShardRouter",
    "ShardUnavailable",
    "ShardedRedis",
    "ShardedSession",
    "ShardingError",
    "SkewReport",
    "jump_hash",
    "merge_sorted",
    "plan_rebalance",
    "skew_report",
]


__getattr__ = lazy_attributes(__name__, _LAZY)
