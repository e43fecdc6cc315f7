"""Three (then four) PostgreSQL databases on the shared server as shards."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from scalepatterns.sharding import (
    AsyncShardedSession,
    FanOutError,
    HashRing,
    Resharder,
    ShardedSession,
    ShardRouter,
    plan_rebalance,
)
from tests.support.models import Account, Base, Member, tables
from tests.support.servers import TcpProxy
from tests.unit.sharding.scenarios import session_scenario

pytestmark = pytest.mark.postgres

SHARDS3 = ["accounts-1", "accounts-2", "accounts-3"]
SHARDS4 = [*SHARDS3, "accounts-4"]
ROWS = 1200


@pytest.fixture
def shard_engines(postgres_url: str, unique_name: str) -> Iterator[dict[str, sa.Engine]]:
    """Four fresh databases named from `unique_name`, dropped afterwards."""
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    names = {shard: f"{unique_name}_s{i + 1}" for i, shard in enumerate(SHARDS4)}
    engines: dict[str, sa.Engine] = {}
    try:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        base = make_url(postgres_url)
        for shard, name in names.items():
            engines[shard] = sa.create_engine(base.set(database=name), pool_size=2)
            Base.metadata.create_all(engines[shard], tables=tables(Account, Member))
        yield engines
    finally:
        for engine in engines.values():
            engine.dispose()
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def state(engines: dict[str, sa.Engine]) -> tuple[int, str, dict[str, set[int]]]:
    """Total rows, a checksum over every row computed by PostgreSQL, and ids per shard."""
    digests, total, where = [], 0, {}
    for shard, engine in engines.items():
        with engine.connect() as conn:
            ids = set(conn.scalars(sa.select(Account.id)))
            rows = conn.execute(
                sa.text(
                    "SELECT md5(id::text || ':' || owner || ':' || balance::text) FROM accounts"
                )
            ).scalars()
            digests += list(rows)
        total += len(ids)
        where[shard] = ids
    checksum = hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()
    return total, checksum, where


def populate(engines: dict[str, sa.Engine]) -> ShardRouter[sa.Engine]:
    router = ShardRouter(HashRing(SHARDS3), {s: engines[s] for s in SHARDS3})
    with ShardedSession(router, {Account: "id"}) as session:
        session.add_all(
            Account(id=i, owner=f"owner{i:05d}", balance=(i * 7919) % 10007) for i in range(ROWS)
        )
        session.commit()
    return router


def test_rows_are_routed_and_fan_out_merges(shard_engines: dict[str, sa.Engine]) -> None:
    router = populate(shard_engines)
    total, _, where = state(shard_engines)
    assert total == ROWS
    assert where["accounts-4"] == set()
    ring = HashRing(SHARDS3)
    for shard in SHARDS3:
        assert where[shard]
        assert all(ring.node_for(i) == shard for i in where[shard])
    with ShardedSession(router, {Account: "id"}) as session:
        account = session.get(Account, 421)
        assert account is not None
        assert account.owner == "owner00421"
        richest = session.fan_out(
            sa.select(Account).order_by(Account.balance.desc(), Account.id).limit(10),
            order_by=lambda a: (-a.balance, a.id),
            limit=10,
        )
        expected = sorted(range(ROWS), key=lambda i: (-((i * 7919) % 10007), i))[:10]
        assert [a.id for a in richest] == expected
        counts = session.fan_out(sa.select(sa.func.count()).select_from(Account))
        assert sum(counts) == ROWS


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_the_session_scenario_on_postgresql(
    shard_engines: dict[str, sa.Engine], flavour: str
) -> None:
    ring = HashRing(SHARDS3)
    if flavour == "sync":
        router = ShardRouter(ring, {s: shard_engines[s] for s in SHARDS3})
        with ShardedSession(router, {Member: "id"}, expire_on_commit=False) as session:
            asyncio.run(session_scenario(session, Member, 300))
        return

    async def main() -> None:
        engines = {s: create_async_engine(shard_engines[s].url) for s in SHARDS3}
        router = ShardRouter(ring, engines)
        async with AsyncShardedSession(router, {Member: "id"}, expire_on_commit=False) as session:
            await session_scenario(session, Member, 300)
        for engine in engines.values():
            await engine.dispose()

    asyncio.run(main())


def test_reshard_three_to_four_with_an_interruption(
    shard_engines: dict[str, sa.Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(shard_engines)
    before_total, before_checksum, before_where = state(shard_engines)
    target = HashRing(SHARDS4)
    plan = plan_rebalance(HashRing(SHARDS3), target, range(ROWS))
    assert {t for _, t in plan.routes} == {"accounts-4"}

    checkpoint: dict[str, object] = {}
    original = Resharder._delete_source
    calls = {"n": 0}

    def crash_before_the_fourth_delete(self: Resharder, *args: object) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise ConnectionError("the resharder's host went away")
        original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Resharder, "_delete_source", crash_before_the_fourth_delete)
    with pytest.raises(ConnectionError):
        Resharder(
            shard_engines, target, Account.__table__, "id", batch_size=100, checkpoint=checkpoint
        ).run()
    monkeypatch.undo()
    assert state(shard_engines)[0] > before_total  # one batch copied but not yet deleted

    report = Resharder(
        shard_engines, target, Account.__table__, "id", batch_size=100, checkpoint=checkpoint
    ).run()
    after_total, after_checksum, where = state(shard_engines)
    assert (after_total, after_checksum) == (before_total, before_checksum)
    for shard, ids in where.items():
        assert all(target.node_for(i) == shard for i in ids)
    assert where["accounts-4"] == {m.key for m in plan.moves}
    for shard in SHARDS3:  # rows that stay were never touched
        assert where[shard] == before_where[shard] - where["accounts-4"]
    assert report.moved > 0
    rerun = Resharder(shard_engines, target, Account.__table__, "id", batch_size=100).run()
    assert rerun.moved == 0
    assert state(shard_engines)[:2] == (before_total, before_checksum)


def test_a_shard_cut_off_fails_alone_and_the_resharder_resumes(
    shard_engines: dict[str, sa.Engine],
) -> None:
    """accounts-4 is reached through a proxy that the test cuts: a real connection loss."""
    populate(shard_engines)
    before_total, before_checksum, _ = state(shard_engines)
    direct = shard_engines["accounts-4"]
    url = direct.url
    with TcpProxy(url.port or 5432, url.host or "127.0.0.1") as proxy:
        proxied = sa.create_engine(
            url.set(host="127.0.0.1", port=proxy.port),
            pool_pre_ping=True,
            connect_args={"connect_timeout": 2},
        )
        engines = {**shard_engines, "accounts-4": proxied}
        router = ShardRouter(HashRing(SHARDS4), engines)
        proxy.block()
        with ShardedSession(router, {Account: "id"}) as session, pytest.raises(FanOutError) as info:
            session.fan_out(sa.select(sa.func.count()).select_from(Account))
        assert set(info.value.errors) == {"accounts-4"}
        assert sum(v[0] for v in info.value.results.values()) == ROWS  # the others answered

        checkpoint: dict[str, object] = {}
        resharder = Resharder(
            engines,
            HashRing(SHARDS4),
            Account.__table__,
            "id",
            batch_size=200,
            checkpoint=checkpoint,
        )
        with pytest.raises(sa.exc.OperationalError):
            resharder.run()
        assert state(shard_engines)[:2] == (before_total, before_checksum)  # nothing deleted

        proxy.unblock()
        report = resharder.run()
        assert report.moved > 0
        proxied.dispose()
    after_total, after_checksum, where = state(shard_engines)
    assert (after_total, after_checksum) == (before_total, before_checksum)
    target = HashRing(SHARDS4)
    assert all(target.node_for(i) == s for s, ids in where.items() for i in ids)
