"""ShardedSession and Resharder on SQLite files (the same code runs on PostgreSQL)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from scalepatterns import ConfigurationError, EventRecorder, Listeners
from scalepatterns.sharding import (
    AsyncShardedSession,
    FanOutError,
    HashRing,
    Rendezvous,
    Resharder,
    ReshardError,
    RowsResharded,
    ShardedSession,
    ShardRouter,
)
from tests.support.models import Base, Member, tables
from tests.unit.sharding.scenarios import session_scenario

SHARDS3 = ["users-1", "users-2", "users-3"]
SHARDS4 = [*SHARDS3, "users-4"]


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[dict[str, sa.Engine]]:
    made = {s: sa.create_engine(f"sqlite:///{tmp_path / s}.db") for s in SHARDS4}
    for engine in made.values():
        Base.metadata.create_all(engine, tables=tables(Member))
    yield made
    for engine in made.values():
        engine.dispose()


def load(engines: dict[str, sa.Engine], count: int) -> None:
    router = ShardRouter(HashRing(SHARDS3), {s: engines[s] for s in SHARDS3})
    with ShardedSession(router, {Member: "id"}) as session:
        session.add_all(Member(id=i, name=f"user{i}", score=(i * 37) % 101) for i in range(count))
        session.commit()


def snapshot(engines: dict[str, sa.Engine]) -> tuple[int, str, dict[str, list[int]]]:
    """Row count, an order-independent checksum of every row, and the ids per shard."""
    rows, where = [], {}
    for shard, engine in engines.items():
        with engine.connect() as conn:
            found = list(conn.execute(sa.select(Member.__table__).order_by(Member.id)))
        rows += [tuple(r) for r in found]
        where[shard] = [r[0] for r in found]
    digest = hashlib.sha256(repr(sorted(rows)).encode()).hexdigest()
    return len(rows), digest, where


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_session_routes_rows_and_merges_fan_outs(
    engines: dict[str, sa.Engine], tmp_path: Path, flavour: str
) -> None:
    ring = HashRing(SHARDS3)
    if flavour == "sync":
        router = ShardRouter(ring, {s: engines[s] for s in SHARDS3})
        with ShardedSession(router, {Member: "id"}, expire_on_commit=False) as session:
            asyncio.run(session_scenario(session, Member, 90))
        return

    async def main() -> None:
        async_engines = {
            s: create_async_engine(f"sqlite+aiosqlite:///{tmp_path / s}.db") for s in SHARDS3
        }
        router = ShardRouter(ring, async_engines)
        async with AsyncShardedSession(router, {Member: "id"}, expire_on_commit=False) as session:
            await session_scenario(session, Member, 90)
        for engine in async_engines.values():
            await engine.dispose()

    asyncio.run(main())


def test_fan_out_reports_the_failing_shard(engines: dict[str, sa.Engine], tmp_path: Path) -> None:
    broken = sa.create_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no members table
    router = ShardRouter(HashRing(SHARDS3), {**engines, "users-3": broken})
    with ShardedSession(router, {Member: "id"}) as session, pytest.raises(FanOutError) as info:
        session.fan_out(sa.select(Member.id))
    assert set(info.value.errors) == {"users-3"}
    assert set(info.value.results) == {"users-1", "users-2"}
    broken.dispose()


def test_an_entity_without_a_shard_key_is_refused(engines: dict[str, sa.Engine]) -> None:
    router = ShardRouter(HashRing(SHARDS3), {s: engines[s] for s in SHARDS3})
    with ShardedSession(router, {Member: "id"}) as session:
        with pytest.raises(ConfigurationError, match="shard key"):
            session.add(Member(name="x", score=1))
        with pytest.raises(ConfigurationError, match="shard_keys"):
            session.add(object())


def test_reshard_three_to_four_loses_and_duplicates_nothing(
    engines: dict[str, sa.Engine],
) -> None:
    load(engines, 400)
    count, checksum, _ = snapshot(engines)
    listeners, recorder = Listeners(), EventRecorder()
    listeners.add(recorder)
    target = HashRing(SHARDS4)
    report = Resharder(
        engines, target, Member.__table__, "id", batch_size=37, listeners=listeners
    ).run()
    after_count, after_checksum, where = snapshot(engines)
    assert (after_count, after_checksum) == (count, checksum)
    for shard, ids in where.items():
        assert all(target.node_for(i) == shard for i in ids)
    assert report.moved == len(where["users-4"]) > 0
    assert {t for _, t in report.routes or {}} == {"users-4"}  # only onto the new shard
    assert sum(e.rows for e in recorder.of_type(RowsResharded)) == report.moved
    again = Resharder(engines, target, Member.__table__, "id").run()
    assert again.moved == 0
    assert snapshot(engines)[:2] == (count, checksum)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("where", ["before_delete", "between_batches"])
def test_an_interrupted_reshard_resumes_without_loss(
    engines: dict[str, sa.Engine], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    load(engines, 300)
    count, checksum, _ = snapshot(engines)
    target = HashRing(SHARDS4)
    checkpoint: dict[str, object] = {}
    calls = {"n": 0}
    original = Resharder._delete_source if where == "before_delete" else Resharder._copy

    def crash_on_third(self: Resharder, *args: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupted
        original(self, *args)  # type: ignore[arg-type]

    name = "_delete_source" if where == "before_delete" else "_copy"
    monkeypatch.setattr(Resharder, name, crash_on_third)
    with pytest.raises(Interrupted):
        Resharder(
            engines, target, Member.__table__, "id", batch_size=20, checkpoint=checkpoint
        ).run()
    monkeypatch.undo()
    if where == "before_delete":  # a batch sits on both shards right now
        assert snapshot(engines)[0] > count
    Resharder(engines, target, Member.__table__, "id", batch_size=20, checkpoint=checkpoint).run()
    after_count, after_checksum, where_ids = snapshot(engines)
    assert (after_count, after_checksum) == (count, checksum)
    for shard, ids in where_ids.items():
        assert all(target.node_for(i) == shard for i in ids)


def test_a_conflicting_row_on_the_target_stops_before_deleting(
    engines: dict[str, sa.Engine],
) -> None:
    load(engines, 100)
    target = HashRing(SHARDS4)
    moving = next(i for i in range(100) if target.node_for(i) == "users-4")
    with engines["users-4"].begin() as conn:
        conn.execute(sa.insert(Member.__table__), [{"id": moving, "name": "other", "score": 0}])
    with pytest.raises(ReshardError, match="differs") as info:
        Resharder(engines, target, Member.__table__, "id").run()
    assert info.value.target == "users-4"
    source = HashRing(SHARDS3).node_for(moving)
    with engines[source].connect() as conn:  # the source row is still there
        assert conn.scalar(sa.select(Member.name).where(Member.id == moving)) == f"user{moving}"


def test_resharder_configuration(engines: dict[str, sa.Engine]) -> None:
    with pytest.raises(ConfigurationError, match="batch_size"):
        Resharder(engines, HashRing(SHARDS4), Member.__table__, "id", batch_size=0)
    with pytest.raises(ConfigurationError, match="key_column"):
        Resharder(engines, HashRing(SHARDS4), Member.__table__, "nope")
    with pytest.raises(ConfigurationError, match="engine"):
        Resharder(engines, HashRing([*SHARDS4, "users-5"]), Member.__table__, "id")


def test_two_shard_ids_on_one_database_are_refused(engines: dict[str, sa.Engine]) -> None:
    """Every row would look "already copied" to the other id, then be deleted: all lost."""
    load(engines, 20)
    twin = sa.create_engine(engines["users-1"].url)  # another Engine, the same database
    shared = {**engines, "users-5": twin}
    with pytest.raises(ConfigurationError, match="one database per shard id"):
        Resharder(shared, HashRing(SHARDS4), Member.__table__, "id")
    assert snapshot(engines)[0] == 20
    twin.dispose()


def test_a_checkpoint_belongs_to_one_target(engines: dict[str, sa.Engine]) -> None:
    load(engines, 50)
    checkpoint: dict[str, object] = {}
    Resharder(engines, HashRing(SHARDS4), Member.__table__, "id", checkpoint=checkpoint).run()
    assert checkpoint["target"] == repr(HashRing(SHARDS4))
    for other in (
        HashRing(SHARDS3),  # other nodes
        HashRing(dict.fromkeys(SHARDS3, 1) | {"users-4": 4}),  # the same nodes, weighted
        Rendezvous(SHARDS4),  # the same nodes, another placement
    ):
        with pytest.raises(ConfigurationError, match="checkpoint"):
            Resharder(engines, other, Member.__table__, "id", checkpoint=checkpoint).run()


def test_close_closes_every_shard_even_when_one_fails(engines: dict[str, sa.Engine]) -> None:
    router = ShardRouter(HashRing(SHARDS3), {s: engines[s] for s in SHARDS3})
    session = ShardedSession(router, {Member: "id"})
    for i in range(30):  # touch every shard
        session.get(Member, i)
    opened = dict(session._open)
    assert set(opened) == set(SHARDS3)
    closed: list[str] = []
    first = next(iter(opened))  # the first one closed fails
    for shard, inner in opened.items():

        def close(shard: str = shard) -> None:
            closed.append(shard)
            if shard == first:
                raise RuntimeError("connection lost while closing")

        inner.close = close
    with pytest.raises(RuntimeError, match="while closing"):
        session.close()
    assert sorted(closed) == sorted(SHARDS3)
    assert session._open == {}
