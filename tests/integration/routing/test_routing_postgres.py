"""The router against a real PostgreSQL primary and a real streaming replica.

The cluster is our own (tests/support/postgres_cluster.py): these tests pause WAL replay on
the replica and SIGKILL it, which must never happen to the shared server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from scalepatterns.clock import FakeClock
from scalepatterns.events import EventRecorder, Listeners
from scalepatterns.routing import (
    LagSampled,
    ReadOnlyViolation,
    ReadWriteRouter,
    ReplicaEjected,
    ReplicaReadmitted,
    RouteDecided,
)
from tests.support.models import Base, Item, tables
from tests.support.postgres_cluster import PostgresCluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


IN_RECOVERY = text("SELECT pg_is_in_recovery()")


@pytest.fixture(scope="module")
def items(pg_cluster: PostgresCluster) -> Iterator[None]:
    engine = sa.create_engine(pg_cluster.primary_url)
    Base.metadata.create_all(engine, tables=tables(Item))
    engine.dispose()
    pg_cluster.wait_replayed()
    yield
    engine = sa.create_engine(pg_cluster.primary_url)
    Base.metadata.drop_all(engine, tables=tables(Item))
    engine.dispose()


@pytest.fixture
def engines(pg_cluster: PostgresCluster, items: None) -> Iterator[tuple[sa.Engine, sa.Engine]]:
    primary = sa.create_engine(pg_cluster.primary_url)
    replica = sa.create_engine(pg_cluster.replica_url)
    yield primary, replica
    primary.dispose()
    replica.dispose()


def on_replica(session: Session) -> bool:
    return bool(session.execute(IN_RECOVERY).scalar_one())


def test_reads_on_the_replica_writes_and_reloads_on_the_primary(
    pg_cluster: PostgresCluster, engines: tuple[sa.Engine, sa.Engine]
) -> None:
    router = ReadWriteRouter(*engines[:1], [engines[1]])
    Session = router.sessionmaker()
    with Session() as session:
        assert on_replica(session)
        item = Item(id=1, v="one")
        session.add(item)
        session.commit()
        assert item.v == "one"  # the reload after commit: the replica may not have it yet
        assert not on_replica(session)
        locked = session.execute(sa.select(Item).where(Item.id == 1).with_for_update())
        assert locked.scalar_one().v == "one"
        session.commit()
    pg_cluster.wait_replayed()
    with Session() as session:
        assert session.get(Item, 1).v == "one"
        assert on_replica(session)


def test_replica_connections_are_read_only(engines: tuple[sa.Engine, sa.Engine]) -> None:
    router = ReadWriteRouter(engines[0], [engines[1]])
    with router.sessionmaker()() as session:
        setting = session.execute(text("SHOW default_transaction_read_only")).scalar_one()
        assert setting == "on"
        with router.read_only(session), pytest.raises(ReadOnlyViolation):
            session.execute(sa.insert(Item).values(id=2, v="x"))


def test_paused_replay_token_reads_see_the_write_tokenless_reads_do_not(
    pg_cluster: PostgresCluster, engines: tuple[sa.Engine, sa.Engine]
) -> None:
    events = EventRecorder()
    listeners = Listeners()
    listeners.add(events, RouteDecided)
    router = ReadWriteRouter(engines[0], [engines[1]], listeners=listeners)
    Session = router.sessionmaker()
    with Session() as session:
        session.add(Item(id=10, v="old"))
        session.commit()
    pg_cluster.wait_replayed()
    pg_cluster.set_replay("pause")
    try:
        with Session() as session:
            session.get(Item, 10).v = "new"
            session.commit()
            token = router.token(session)
        assert token is not None
        assert token.startswith("v1:pg:")
        with Session(consistency_token=token) as session:
            assert session.get(Item, 10).v == "new"
            assert not on_replica(session)  # the replica has not replayed it: primary
        assert ("primary", "token") in [(e.target, e.reason) for e in events.events]
        with Session() as session:
            assert session.get(Item, 10).v == "old"  # no token: the replica's older state
            assert on_replica(session)
        patient = ReadWriteRouter(engines[0], [engines[1]], token_wait=0.2)
        with patient.sessionmaker()(consistency_token=token) as session:
            assert session.get(Item, 10).v == "new"  # waited 0.2 s, then the primary
            assert not on_replica(session)
    finally:
        pg_cluster.set_replay("resume")
    waiting = ReadWriteRouter(engines[0], [engines[1]], token_wait=15.0)
    with waiting.sessionmaker()(consistency_token=token) as session:
        assert session.get(Item, 10).v == "new"
        assert on_replica(session)  # resumed: token reads are back on the replica


def test_lag_is_measured_on_the_server_and_a_lagging_replica_is_ejected(
    pg_cluster: PostgresCluster, engines: tuple[sa.Engine, sa.Engine]
) -> None:
    events = EventRecorder()
    listeners = Listeners()
    listeners.add(events)
    router = ReadWriteRouter(engines[0], [engines[1]], max_lag_bytes=1024, listeners=listeners)
    Session = router.sessionmaker()
    pg_cluster.wait_replayed()
    (status,) = router.check()
    assert (status.in_rotation, status.lag_bytes, status.lag_seconds) == (True, 0, 0.0)
    pg_cluster.set_replay("pause")
    try:
        with Session() as session:
            session.add_all([Item(id=100 + i, v="x" * 200) for i in range(50)])
            session.commit()
            token = router.token(session)
        (status,) = router.check()
        assert status.lag_bytes is not None
        assert status.lag_bytes > 1024
        assert status.lag_seconds is not None
        assert status.lag_seconds >= 0
        assert (status.in_rotation, status.ejected_for) == (False, "lag")
        assert [e.reason for e in events.of_type(ReplicaEjected)] == ["lag"]
        with Session() as session:
            assert not on_replica(session)
    finally:
        pg_cluster.set_replay("resume")
    pg_cluster.wait_replayed()
    (status,) = router.check()
    assert (status.in_rotation, status.lag_bytes) == (True, 0)
    assert [e.replica for e in events.of_type(ReplicaReadmitted)] == ["replica1"]
    assert len(events.of_type(LagSampled)) == 3
    with Session() as session:
        assert on_replica(session)
    asked: list[str] = []
    sa.event.listen(engines[1], "before_cursor_execute", lambda *a: asked.append(a[2]))
    with Session(consistency_token=token) as session:
        assert session.get(Item, 149).v == "x" * 200
        assert on_replica(session)
    # the monitor's last sample already showed the replica past the token: no extra query
    assert not [sql for sql in asked if "pg_last_wal_replay_lsn" in sql]


def test_killed_replica_reads_fall_back_to_the_primary_then_it_is_readmitted(
    pg_cluster: PostgresCluster, engines: tuple[sa.Engine, sa.Engine]
) -> None:
    clock = FakeClock()
    events = EventRecorder()
    listeners = Listeners()
    listeners.add(events)
    router = ReadWriteRouter(
        engines[0], [engines[1]], cooldown=30.0, clock=clock, listeners=listeners
    )
    Session = router.sessionmaker()
    with Session() as session:
        session.add(Item(id=20, v="kept"))
        session.commit()
    pg_cluster.wait_replayed()
    with Session() as session:
        assert on_replica(session)  # a pooled connection to the replica now exists
    pg_cluster.kill_replica()
    try:
        for _ in range(5):
            with Session() as session:
                assert session.get(Item, 20).v == "kept"
                assert not on_replica(session)
        assert [e.reason for e in events.of_type(ReplicaEjected)] == ["unreachable"]
        (status,) = router.check()  # still down: stays out
        assert (status.in_rotation, status.ejected_for) == (False, "unreachable")
    finally:
        pg_cluster.start_replica()
    pg_cluster.wait_replayed()
    clock.advance(30.0)
    (status,) = router.check()
    assert status.in_rotation
    assert [e.replica for e in events.of_type(ReplicaReadmitted)] == ["replica1"]
    with Session() as session:
        assert session.get(Item, 20).v == "kept"
        assert on_replica(session)


def test_a_replica_dying_before_the_commit_does_not_touch_the_write(
    pg_cluster: PostgresCluster, engines: tuple[sa.Engine, sa.Engine]
) -> None:
    """The read before the write left a replica connection in the transaction; a commit
    that also committed it failed (and sometimes lost the write) once the replica died."""
    router = ReadWriteRouter(engines[0], [engines[1]], clock=FakeClock())
    Session = router.sessionmaker()
    pg_cluster.wait_replayed()
    try:
        with Session() as session:
            assert on_replica(session)  # a read: the replica joins the transaction
            session.add(Item(id=60, v="written"))
            session.flush()  # the write: the primary
            pg_cluster.kill_replica()
            session.commit()  # the primary's commit alone
    finally:
        pg_cluster.start_replica()
    with engines[0].connect() as connection:
        stored = connection.execute(sa.select(Item.v).where(Item.id == 60)).scalar()
    assert stored == "written"
    pg_cluster.wait_replayed()


# -- async ------------------------------------------------------------------------------------


async def aon_replica(session: AsyncSession) -> bool:
    return bool((await session.execute(IN_RECOVERY)).scalar_one())


def async_router(cluster: PostgresCluster, **kw: object) -> ReadWriteRouter:
    return ReadWriteRouter(
        create_async_engine(cluster.primary_url),
        [create_async_engine(cluster.replica_url)],
        **kw,  # type: ignore[arg-type]
    )


async def adispose(router: ReadWriteRouter) -> None:
    for name in ["primary", *router.replicas]:
        await router._given[name].dispose()


def test_async_paused_replay_and_token(pg_cluster: PostgresCluster, items: None) -> None:
    async def scenario() -> None:
        router = async_router(pg_cluster)
        Session = router.async_sessionmaker()
        async with Session() as session:
            session.add(Item(id=30, v="old"))
            await session.commit()
            assert (await session.get(Item, 30)).v == "old"  # reload on the primary
            assert not await aon_replica(session)
        pg_cluster.wait_replayed()
        pg_cluster.set_replay("pause")
        try:
            async with Session() as session:
                (await session.get(Item, 30)).v = "new"
                await session.commit()
                token = await router.atoken(session)
            async with Session(consistency_token=token) as session:
                assert (await session.get(Item, 30)).v == "new"
                assert not await aon_replica(session)
            async with Session() as session:
                assert (await session.get(Item, 30)).v == "old"
                assert await aon_replica(session)
        finally:
            pg_cluster.set_replay("resume")
        waiting = async_router(pg_cluster, token_wait=15.0)
        async with waiting.async_sessionmaker()(consistency_token=token) as session:
            assert (await session.get(Item, 30)).v == "new"
            assert await aon_replica(session)
        await adispose(router)
        await adispose(waiting)

    asyncio.run(scenario())


def test_async_killed_replica_and_readmission(pg_cluster: PostgresCluster, items: None) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        router = async_router(pg_cluster, clock=clock, cooldown=30.0)
        Session = router.async_sessionmaker()
        async with Session() as session:
            session.add(Item(id=40, v="kept"))
            await session.commit()
        pg_cluster.wait_replayed()
        async with Session() as session:
            assert await aon_replica(session)
        pg_cluster.kill_replica()
        try:
            for _ in range(3):
                async with Session() as session:
                    assert (await session.get(Item, 40)).v == "kept"
                    assert not await aon_replica(session)
            (status,) = await router.acheck()
            assert (status.in_rotation, status.ejected_for) == (False, "unreachable")
        finally:
            pg_cluster.start_replica()
        pg_cluster.wait_replayed()
        clock.advance(30.0)
        (status,) = await router.acheck()
        assert status.in_rotation
        async with Session() as session:
            assert await aon_replica(session)
        await adispose(router)

    asyncio.run(scenario())


def test_a_server_hiding_the_wal_functions_falls_back_to_time_tokens(
    pg_cluster: PostgresCluster, engines: tuple[sa.Engine, sa.Engine]
) -> None:
    """Managed PostgreSQL variants hide pg_last_wal_*: replicas stay in, tokens use time."""
    hidden = "pg_last_wal_replay_lsn(), pg_last_xact_replay_timestamp()"
    admin = engines[0]
    with admin.begin() as conn:
        conn.execute(text("CREATE ROLE sp_app LOGIN"))
        conn.execute(text(f"GRANT ALL ON {Item.__tablename__} TO sp_app"))
        conn.execute(text(f"REVOKE EXECUTE ON FUNCTION {hidden} FROM PUBLIC"))
    pg_cluster.wait_replayed()
    app_primary = sa.create_engine(pg_cluster.primary_url.replace("postgres@", "sp_app@"))
    app_replica = sa.create_engine(pg_cluster.replica_url.replace("postgres@", "sp_app@"))
    try:
        router = ReadWriteRouter(app_primary, [app_replica], sticky_for=60.0)
        assert router.wal
        (status,) = router.check()
        assert (status.in_rotation, status.lag_bytes) == (True, None)
        assert not router.wal  # switched to time-based consistency, replica still in use
        Session = router.sessionmaker()
        with Session() as session:
            session.add(Item(id=50, v="managed"))
            session.commit()
            token = router.token(session)
        assert token is not None
        assert token.startswith("v1:t:")
        with Session(consistency_token=token) as session:
            assert session.get(Item, 50).v == "managed"
            assert not on_replica(session)  # sticky for 60 s after the write
        with Session() as session:
            assert on_replica(session)
        strict = ReadWriteRouter(app_primary, [app_replica], consistency="lsn")
        (status,) = strict.check()
        assert status.in_rotation  # alive, lag unknown: not ejected
        assert strict.wal
    finally:
        app_primary.dispose()
        app_replica.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"GRANT EXECUTE ON FUNCTION {hidden} TO PUBLIC"))
            conn.execute(text("DROP OWNED BY sp_app"))
            conn.execute(text("DROP ROLE sp_app"))
