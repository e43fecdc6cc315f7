"""Sharding users: from an A-M / N-Z split to consistent hashing, on SQLite files.

The seeds' story: users are split by name, A-M on shard 1 and N-Z on shard 2. Names are
not uniform (far more start with A-M than N-Z), so shard 1 runs hot, and adding a third
shard means re-cutting the ranges and moving a large part of the rows by hand. Consistent
hashing spreads the same users evenly, and adding a shard moves only about 1/(N+1) of
them, onto the new shard, copied by the resharder in verified batches.

Run: ``python examples/sharding_users.py``
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from scalepatterns.sharding import (
    HashRing,
    RangeShards,
    Resharder,
    ShardedSession,
    ShardRouter,
    plan_rebalance,
    skew_report,
)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    name: Mapped[str] = mapped_column(primary_key=True)
    signup_year: Mapped[int]


# First letters weighted roughly like English given names: A-M is far more common.
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
WEIGHTS = [9, 4, 7, 6, 5, 2, 3, 3, 2, 8, 5, 6, 9, 3, 1, 2, 1, 5, 7, 4, 1, 2, 2, 1, 1, 1]


def make_names(count: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < count:
        first = rng.choices(LETTERS, WEIGHTS)[0]
        names.add(first + "".join(rng.choices("aeiounrstlm", k=6)))
    return sorted(names)


def main(count: int = 2000, out: str | None = None, *, verbose: bool = True) -> dict[str, float]:
    """Run the story; returns the figures it printed (for the tour and tests)."""
    say = print if verbose else (lambda *a, **k: None)
    names = make_names(count)
    figures: dict[str, float] = {}

    by_range = RangeShards([(None, "N", "shard-1"), ("N", None, "shard-2")], normalize=str.upper)
    ranges = skew_report({s: sum(by_range.node_for(n) == s for n in names) for s in by_range.nodes})
    say(f"A-M / N-Z split of {count} users: {ranges.loads} -> {ranges}")
    figures["range_skew"] = ranges.ratio

    three_ranges = RangeShards(
        [(None, "H", "shard-1"), ("H", "N", "shard-3"), ("N", None, "shard-2")],
        normalize=str.upper,
    )
    recut = plan_rebalance(by_range, three_ranges, names)
    say(f"re-cutting the ranges for a third shard: {recut}")
    figures["range_moved"] = recut.fraction

    ring2 = HashRing(["shard-1", "shard-2"])
    hashed = skew_report({s: sum(ring2.node_for(n) == s for n in names) for s in ring2.nodes})
    say(f"consistent hashing, same users: {hashed.loads} -> {hashed}")
    figures["ring_skew"] = hashed.ratio
    ring3 = HashRing(["shard-1", "shard-2", "shard-3"])
    grow = plan_rebalance(ring2, ring3, names)
    say(f"adding shard-3 to the ring: {grow}, all onto shard-3: {set(grow.by_target())}")
    figures["ring_moved"] = grow.fraction

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(out or tmp)
        engines = {
            s: sa.create_engine(f"sqlite:///{folder / s}.db")
            for s in ("shard-1", "shard-2", "shard-3")
        }
        for engine in engines.values():
            Base.metadata.create_all(engine)
        router = ShardRouter(ring2, {s: engines[s] for s in ring2.nodes})
        with ShardedSession(router, {User: "name"}) as session:
            session.add_all(User(name=n, signup_year=2000 + len(n) % 20) for n in names)
            session.commit()
            first = session.fan_out(sa.select(User.name).order_by(User.name).limit(3), limit=3)
        say(f"rows routed by name to 2 SQLite shards; first three across shards: {first}")
        report = Resharder(engines, ring3, User.__table__, "name", batch_size=250).run()
        counts = {}
        for shard, engine in engines.items():
            with engine.connect() as conn:
                counts[shard] = conn.scalar(sa.select(sa.func.count()).select_from(User))
        say(f"resharded 2 -> 3: {report.moved} rows moved in {report.batches} batches: {counts}")
        figures["rows_total"] = sum(counts.values())
        figures["rows_moved"] = report.moved
        for engine in engines.values():
            engine.dispose()
    return figures


if __name__ == "__main__":
    main()
