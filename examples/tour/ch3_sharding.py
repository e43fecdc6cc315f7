"""Chapter 3: sharding: which shard owns a key, keeping shards even, and resharding."""

from __future__ import annotations

import tempfile
from pathlib import Path

import sqlalchemy as sa

from scalepatterns.sharding import (
    BoundedLoadRing,
    HashRing,
    RangeShards,
    Resharder,
    ShardRouter,
    plan_rebalance,
    skew_report,
)

TITLE = "Sharding: consistent hashing, even shards, resharding SQL rows"

FIRST_LETTERS = "AAAABBCCCDDEEFGHIJJJKKLLMMMNOPRRSSTTUVWZ"  # A-M is the busy half


def run() -> None:
    users = [f"{FIRST_LETTERS[i % len(FIRST_LETTERS)]}user{i}" for i in range(4000)]

    ranges = RangeShards([(None, "N", "users-1"), ("N", None, "users-2")], normalize=str.upper)
    split = skew_report({s: sum(ranges.node_for(u) == s for u in users) for s in ranges.nodes})
    print(f"   A-M / N-Z ranges: {split.loads} -> {split}")

    ring = HashRing(["users-1", "users-2"])
    even = skew_report({s: sum(ring.node_for(u) == s for u in users) for s in ring.nodes})
    print(f"   consistent hashing, same users: {even.loads} -> max/mean {even.ratio:.3f}")

    grown = HashRing(["users-1", "users-2", "users-3"])
    plan = plan_rebalance(ring, grown, users)
    print(f"   adding users-3: {plan}, every move lands on {sorted(plan.by_target())}")

    tight = HashRing([f"n{i}" for i in range(10)], vnodes=4)
    bounded = BoundedLoadRing([f"n{i}" for i in range(10)], vnodes=4, epsilon=0.25)
    plain = skew_report({n: sum(tight.node_for(u) == n for u in users) for n in tight.nodes})
    for user in users:
        bounded.assign(user)
    capped = skew_report(bounded.loads())
    print(
        f"   10 nodes with 4 vnodes: plain ring max/mean {plain.ratio:.2f}, "
        f"bounded-load ring {capped.ratio:.2f} (cap 1 + eps = 1.25)"
    )

    with tempfile.TemporaryDirectory() as folder:
        meta = sa.MetaData()
        table = sa.Table(
            "users",
            meta,
            sa.Column("name", sa.String, primary_key=True),
            sa.Column("n", sa.Integer),
        )
        engines = {s: sa.create_engine(f"sqlite:///{Path(folder) / s}.db") for s in grown.nodes}
        for engine in engines.values():
            meta.create_all(engine)
        router = ShardRouter(ring, {s: engines[s] for s in ring.nodes})
        for shard, names in router.group_by_shard(users).items():
            with router.resource(shard).begin() as conn:
                conn.execute(sa.insert(table), [{"name": u, "n": i} for i, u in enumerate(names)])
        report = Resharder(engines, grown, table, "name", batch_size=500).run()

        def count(shard: str, engine: sa.Engine) -> int:
            with engine.connect() as conn:
                return int(conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)

        counts = ShardRouter(grown, engines).fan_out(count)
        for engine in engines.values():
            engine.dispose()
        print(
            f"   resharded SQLite shards 2 -> 3: {report.moved} rows copied, verified, deleted "
            f"in {report.batches} batches; rows now {counts} (total {sum(counts.values())})"
        )
