"""The router across the loss of its primary: SIGKILL, then ``pg_ctl promote`` on the standby.

Our own two-node cluster (tests/support/postgres_cluster.py), started once for the module;
both servers log every writing statement they receive, so the tests can prove from the
servers' side that none reached a server in recovery. Each test fails over once and
rebuilds the former primary as a standby, so the next one fails over the other way.

The router is set up as the docs say: the primary engine is a libpq multi-host URL over both
nodes with ``target_session_attrs=read-write``, and both nodes are listed as replicas (one of
them is always the primary, which may serve reads too).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from scalepatterns.events import EventRecorder, Listeners
from scalepatterns.routing import (
    ConsistencyToken,
    NotPrimary,
    ReadWriteRouter,
    ReplicaView,
    RouteDecided,
    Timeline,
    TimelineChanged,
)
from tests.support.models import Base, Item, tables
from tests.support.postgres_cluster import PostgresCluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CONNECT = {"connect_timeout": 2}
WHO = text("SELECT inet_server_port(), pg_is_in_recovery()")
FAILED_WRITE = (sa_exc.OperationalError, sa_exc.InterfaceError, NotPrimary)


@pytest.fixture(scope="module")
def cluster(failover_cluster: PostgresCluster) -> PostgresCluster:
    engine = sa.create_engine(failover_cluster.primary_url)
    Base.metadata.create_all(engine, tables=tables(Item))
    engine.dispose()
    failover_cluster.wait_replayed()
    return failover_cluster


def prefer(name: str) -> Callable[[Sequence[ReplicaView]], ReplicaView]:
    """A balancer that picks replica `name` whenever it is a candidate."""

    def choose(candidates: Sequence[ReplicaView]) -> ReplicaView:
        return next((c for c in candidates if c.name == name), candidates[0])

    return choose


class Routed:
    """A router over the cluster as the docs set it up, and the events it emitted."""

    def __init__(self, cluster: PostgresCluster, *, asynchronous: bool, **kw: Any) -> None:
        create: Any = create_async_engine if asynchronous else sa.create_engine
        self.primary = create(cluster.multihost_url(), connect_args=CONNECT, pool_pre_ping=True)
        self.nodes = {
            node: create(cluster.url(port), connect_args=CONNECT)
            for node, port in cluster.ports.items()
        }
        self.events = EventRecorder()
        listeners = Listeners()
        listeners.add(self.events)
        self.router = ReadWriteRouter(self.primary, self.nodes, listeners=listeners, **kw)

    def routes(self) -> set[tuple[str, str]]:
        """Where the statements since the last `events.clear()` went, and why."""
        return {(e.target, e.reason) for e in self.events.of_type(RouteDecided)}

    def engines(self) -> list[Any]:
        return [self.primary, *self.nodes.values()]


def stored(cluster: PostgresCluster, port: int, item_id: int) -> str | None:
    """What the server on `port` holds for `item_id`, read directly."""
    engine = sa.create_engine(cluster.url(port), poolclass=sa.pool.NullPool, connect_args=CONNECT)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(Item.v).where(Item.id == item_id)).scalar()
    finally:
        engine.dispose()


# -- sync ------------------------------------------------------------------------------------


def write(session_factory: Any, router: ReadWriteRouter, rows: dict[int, str]) -> str:
    """Commit `rows` through a routed session (durably: synchronous_commit on) -> its token."""
    with session_factory() as session:
        session.execute(text("SET LOCAL synchronous_commit = on"))
        session.add_all([Item(id=i, v=v) for i, v in rows.items()])
        session.commit()
        token = router.token(session)
    assert token is not None
    return token


def write_until_it_lands(session_factory: Any, router: ReadWriteRouter, item: int) -> int:
    """Retry one write through the same sessionmaker until it commits -> failed attempts."""
    failures = 0
    deadline = time.monotonic() + 60
    while True:
        try:
            write(session_factory, router, {item: "after"})
            return failures
        except FAILED_WRITE:
            failures += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def read(session_factory: Any, token: str | None, item_id: int) -> tuple[str | None, int]:
    """A token holder's read -> (the value, the port of the server that served it)."""
    with session_factory(consistency_token=token) as session:
        item = session.get(Item, item_id)
        port, _ = session.execute(WHO).one()
        return (None if item is None else item.v), port


def test_a_promoted_standby_takes_the_writes_and_token_holders_read_no_stale_row(
    cluster: PostgresCluster,
) -> None:
    old_node, new_node = cluster.primary_node, cluster.replica_node
    old_port, new_port = cluster.primary_port, cluster.replica_port
    sent_before = cluster.writes_received_in_recovery()
    routed = Routed(cluster, asynchronous=False, balance=prefer(old_node))
    router = routed.router
    Session = router.sessionmaker()
    try:
        kept = write(Session, router, {1: "kept"})
        cluster.wait_replayed()
        # The standby goes down; the primary takes a write it never streams, then dies.
        cluster.kill_replica()
        lost = write(Session, router, {2: "lost", **dict.fromkeys(range(100, 2100), "x" * 400)})
        cluster.kill_primary()
        cluster.start_replica()  # the only server reachable is in recovery

        with pytest.raises(sa_exc.OperationalError, match=r"read-only|hot standby"):
            write(Session, router, {3: "too early"})  # libpq refused it: nothing was sent
        pointed_at_standby = ReadWriteRouter(
            sa.create_engine(cluster.url(new_port), connect_args=CONNECT), []
        )
        with pytest.raises(NotPrimary, match="in recovery") as refused:
            write(pointed_at_standby.sessionmaker(), pointed_at_standby, {3: "too early"})
        assert (refused.value.reason, refused.value.server) == (
            "in_recovery",
            f"127.0.0.1:{new_port}",
        )
        pointed_at_standby.primary.dispose()

        cluster.promote_replica()
        # Writes resume through the same sessionmaker: pre-ping replaced the pooled
        # connections to the dead primary, and libpq found the promoted one.
        assert write_until_it_lands(Session, router, 3) == 0
        assert stored(cluster, new_port, 3) == "after"
        assert stored(cluster, new_port, 2) is None  # the write the standby never received
        changed = routed.events.of_type(TimelineChanged)
        assert [(e.previous.timeline_id, e.current.timeline_id) for e in changed] == [(1, 2)]
        new_timeline = changed[0].current

        # Tokens from before the promotion name the dead timeline: the primary answers.
        routed.events.clear()
        assert read(Session, kept, 1) == ("kept", new_port)
        assert read(Session, lost, 2) == (None, new_port)  # lost with the old primary
        assert routed.routes() == {("primary", "token")}
        with Session() as session:
            session.add(Item(id=4, v="newest"))
            session.commit()
            newest = router.token(session)
        assert newest is not None
        assert ConsistencyToken.parse(newest).timeline == new_timeline

        # The old primary comes back as a standby without being rebuilt: it cannot follow
        # the new timeline and stays readable on the old one, with a replay position past
        # the new token's. By position alone it would look caught up; it lacks row 4.
        cluster.restart_former_primary(as_standby=True)
        statuses = {s.name: s for s in router.check()}
        stuck = statuses[old_node]
        parsed = ConsistencyToken.parse(newest)
        assert parsed.lsn is not None
        assert stuck.in_rotation
        assert stuck.replay_lsn is not None
        assert stuck.replay_lsn > parsed.lsn
        assert stuck.timeline == Timeline(new_timeline.system_id, 1)
        assert stored(cluster, old_port, 4) is None
        for _ in range(3):
            assert read(Session, newest, 4)[0] == "newest"
        assert read(Session, None, 2) == ("lost", old_port)  # token-less reads: no promise
        assert router.timelines.current == new_timeline

        # Unfenced, the old primary accepts writes again; the router refuses new
        # connections to it (libpq tries it first) rather than write to a dead history.
        cluster.stop_former_primary()
        cluster.restart_former_primary(as_standby=False)
        routed.primary.dispose()
        with pytest.raises(NotPrimary, match="behind") as behind:
            write(Session, router, {5: "split brain"})
        assert (behind.value.reason, behind.value.server) == ("behind", f"127.0.0.1:{old_port}")
        assert stored(cluster, old_port, 5) is None
    finally:
        for engine in routed.engines():
            engine.dispose()
    assert cluster.writes_received_in_recovery() == sent_before
    cluster.stop_former_primary()
    cluster.rejoin_former_primary()
    assert (cluster.primary_node, cluster.replica_node) == (new_node, old_node)


# -- async -----------------------------------------------------------------------------------


async def awrite(session_factory: Any, router: ReadWriteRouter, rows: dict[int, str]) -> str:
    async with session_factory() as session:
        await session.execute(text("SET LOCAL synchronous_commit = on"))
        session.add_all([Item(id=i, v=v) for i, v in rows.items()])
        await session.commit()
        token = await router.atoken(session)
    assert token is not None
    return token


async def aread(session_factory: Any, token: str | None, item_id: int) -> tuple[str | None, int]:
    async with session_factory(consistency_token=token) as session:
        assert isinstance(session, AsyncSession)
        item = await session.get(Item, item_id)
        port, _ = (await session.execute(WHO)).one()
        return (None if item is None else item.v), port


def test_async_sessions_survive_the_promotion_too(cluster: PostgresCluster) -> None:
    old_port, new_port = cluster.primary_port, cluster.replica_port
    sent_before = cluster.writes_received_in_recovery()

    async def scenario() -> None:
        routed = Routed(cluster, asynchronous=True)
        router = routed.router
        Session = router.async_sessionmaker()
        try:
            before = await awrite(Session, router, {10: "before"})
            cluster.wait_replayed()
            cluster.kill_primary()
            with pytest.raises(sa_exc.OperationalError, match=r"read-only|hot standby"):
                await awrite(Session, router, {11: "too early"})
            cluster.promote_replica()
            failures = 0
            while True:
                try:
                    after = await awrite(Session, router, {11: "after"})
                    break
                except FAILED_WRITE:
                    failures += 1
                    assert failures < 100
                    await asyncio.sleep(0.05)
            assert failures == 0  # pre-ping replaced the dead pooled connections
            assert stored(cluster, new_port, 11) == "after"
            (changed,) = routed.events.of_type(TimelineChanged)
            assert changed.previous == ConsistencyToken.parse(before).timeline
            assert changed.current == ConsistencyToken.parse(after).timeline
            assert changed.current.timeline_id == changed.previous.timeline_id + 1
            routed.events.clear()
            assert await aread(Session, before, 10) == ("before", new_port)
            assert routed.routes() == {("primary", "token")}  # an older timeline: the primary
            assert await aread(Session, after, 11) == ("after", new_port)
        finally:
            for engine in routed.engines():
                await engine.dispose()

    asyncio.run(scenario())
    assert cluster.writes_received_in_recovery() == sent_before
    cluster.rejoin_former_primary()
    assert stored(cluster, old_port, 11) == "after"  # rebuilt from the new primary


# -- find_primary ----------------------------------------------------------------------------


def test_find_primary_points_new_connections_and_a_standby_is_refused(
    cluster: PostgresCluster,
) -> None:
    standby, primary = cluster.replica_port, cluster.primary_port
    sent_before = cluster.writes_received_in_recovery()
    where = {"port": standby}
    router = ReadWriteRouter(
        sa.create_engine(cluster.url(1), connect_args=CONNECT),  # the port is replaced
        find_primary=lambda: ("127.0.0.1", where["port"]),
    )
    Session = router.sessionmaker()
    try:
        with pytest.raises(NotPrimary, match="in recovery"):
            write(Session, router, {20: "to the standby"})
        where["port"] = primary
        write(Session, router, {20: "to the primary"})
        assert stored(cluster, primary, 20) == "to the primary"
    finally:
        router.primary.dispose()
    cluster.wait_replayed()
    assert stored(cluster, standby, 20) == "to the primary"
    assert cluster.writes_received_in_recovery() == sent_before


def test_the_write_log_would_show_a_write_sent_to_a_standby(cluster: PostgresCluster) -> None:
    """The proof above reads the servers' logs: a write that does reach a standby shows."""
    sent_before = cluster.writes_received_in_recovery()
    engine = sa.create_engine(cluster.replica_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn, pytest.raises(sa_exc.InternalError, match="read-only"):
            conn.execute(sa.insert(Item).values(id=30, v="sent anyway"))
    finally:
        engine.dispose()
    received = cluster.writes_received_in_recovery()[len(sent_before) :]
    assert len(received) == 1
    assert f"INSERT INTO {Item.__tablename__}" in received[0]
