"""Which engine serves each statement of a routed session (SQLite primary and replica files)."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa
from sqlalchemy import text

from scalepatterns.clock import FakeClock
from scalepatterns.errors import ConfigurationError, ScalePatternsError
from scalepatterns.events import EventRecorder, Listeners
from scalepatterns.routing import (
    InvalidToken,
    NoHealthyReplica,
    ReadOnlyViolation,
    ReadWriteRouter,
    ReplicaEjected,
    ReplicaReadmitted,
    RouteDecided,
)
from tests.support.models import WHOAMI, User
from tests.unit.routing.conftest import SqliteCluster


def make_router(cluster: SqliteCluster, **kw: object) -> ReadWriteRouter:
    engines = cluster.engines("primary", "replica1", "replica2")
    primary = engines.pop("primary")
    return ReadWriteRouter(primary, engines, **kw)  # type: ignore[arg-type]


def whoami(session: sa.orm.Session) -> str:
    return session.execute(sa.select(WHOAMI.c.name)).scalar_one()


def first_read(router: ReadWriteRouter) -> str:
    """Which engine a fresh session's first read goes to."""
    with router.sessionmaker()() as session:
        return whoami(session)


def test_reads_go_to_one_replica_per_session_and_sessions_rotate(cluster: SqliteCluster) -> None:
    router = make_router(cluster)
    Session = router.sessionmaker()
    served = []
    for _ in range(4):
        with Session() as session:
            first = whoami(session)
            assert session.get(User, 1).name == {"replica1": "r1-ada", "replica2": "r2-ada"}[first]
            assert session.execute(sa.select(sa.func.count()).select_from(User)).scalar() == 1
            assert whoami(session) == first  # pinned: never hops between replicas
            served.append(first)
    assert served == ["replica1", "replica2", "replica1", "replica2"]
    assert "primary" not in cluster.log.engines()


def test_orm_flush_and_everything_after_it_in_the_transaction_use_the_primary(
    cluster: SqliteCluster,
) -> None:
    router = make_router(cluster)
    with router.sessionmaker()() as session:
        assert whoami(session) == "replica1"
        session.add(User(id=2, name="grace"))
        session.flush()
        assert whoami(session) == "primary"
        assert session.get(User, 1).name == "primary-ada"
        session.commit()
    assert ("primary", "INSERT") in cluster.log.entries
    assert not [e for e in cluster.log.entries if e[0] != "primary" and e[1] != "SELECT"]


def test_autoflush_before_a_query_goes_to_the_primary(cluster: SqliteCluster) -> None:
    router = make_router(cluster)
    with router.sessionmaker()() as session:
        session.add(User(id=2, name="grace"))
        names = session.scalars(sa.select(User.name).order_by(User.id)).all()
        assert names == ["primary-ada", "grace"]
        session.rollback()
    with router.sessionmaker()() as session:  # rolled back: nothing written, replicas again
        assert whoami(session) in {"replica1", "replica2"}


@pytest.mark.parametrize(
    "statement",
    [
        sa.insert(User).values(id=5, name="core"),
        sa.update(User).where(User.id == 1).values(name="x"),
        sa.delete(User).where(User.id == 99),
        text("UPDATE users SET name = 'y' WHERE id = 1"),
        text("with x as (select 1) insert into users (id, name) values (6, 'w')"),
    ],
    ids=["insert", "update", "delete", "text-update", "text-cte-insert"],
)
def test_core_writes_through_execute_go_to_the_primary(
    cluster: SqliteCluster, statement: sa.Executable
) -> None:
    router = make_router(cluster)
    with router.sessionmaker()() as session:
        session.execute(statement)
        assert whoami(session) == "primary"  # after the first write: primary
        session.commit()
    assert cluster.log.entries[0][0] == "primary"


def test_session_connection_counts_as_a_write(cluster: SqliteCluster) -> None:
    """What runs on `session.connection()` is out of sight: it may write, so the reads after
    it and the token must see the primary (they went to a replica, with no token)."""
    router = make_router(cluster)
    with router.sessionmaker()() as session:
        session.connection().execute(User.__table__.insert(), {"id": 77, "name": "raw"})
        assert session.get(User, 77).name == "raw"  # same transaction: the primary
        session.commit()
        assert router.token(session) is not None
        assert whoami(session) == "primary"  # after a write, the session stays there
    with router.sessionmaker()() as session, router.read_only(session):
        assert session.connection() is not None  # allowed: a read-only session may read


def test_select_for_update_goes_to_the_primary(cluster: SqliteCluster) -> None:
    router = make_router(cluster)
    with router.sessionmaker()() as session:
        row = session.execute(sa.select(WHOAMI.c.name).with_for_update()).scalar_one()
        assert row == "primary"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1", None),
        ("  (select 1)", None),
        ("show search_path", None),
        ("SELECT * FROM t FOR UPDATE", "write"),
        ("select * from t for no key update", "write"),
        ("SELECT * FROM t FOR SHARE", "write"),
        ("SELECT * INTO t2 FROM t", "write"),
        ("INSERT INTO t VALUES (1)", "write"),
        ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", "write"),
        ("CALL proc()", "write"),
        ("VACUUM", "write"),
        ("EXPLAIN ANALYZE DELETE FROM t", "write"),  # ANALYZE runs the statement
        ("SELECT 1; DELETE FROM t", "write"),  # a second statement
        ("select 1;", None),
    ],
)
def test_text_statements_are_reads_only_when_they_plainly_read(
    sql: str, expected: str | None
) -> None:
    from scalepatterns.routing.session import classify

    assert classify(text(sql)) == expected


def test_text_selects_are_reads(cluster: SqliteCluster) -> None:
    router = make_router(cluster)
    with router.sessionmaker()() as session:
        assert session.execute(text("  select name from whoami")).scalar_one() == "replica1"
        assert session.execute(text("SELECT name FROM whoami").columns(WHOAMI.c.name)).scalar() == (
            "replica1"
        )


def test_reloads_after_commit_come_from_the_primary(cluster: SqliteCluster) -> None:
    """SQLAlchemy's recipe reloads expired attributes from a follower: stale or missing rows."""
    router = make_router(cluster)
    with router.sessionmaker()() as session:
        user = User(id=7, name="new")
        session.add(user)
        session.commit()
        assert user.name == "new"  # the replica file has no user 7: this reload hit the primary
        ada = session.get(User, 1)
        assert ada.name == "primary-ada"
    assert [e for e in cluster.log.entries if e[0] != "primary"] == []


def test_a_rolled_back_write_does_not_pin_the_session(cluster: SqliteCluster) -> None:
    router = make_router(cluster)
    with router.sessionmaker()() as session:
        session.execute(sa.insert(User).values(id=8, name="gone"))
        session.rollback()
        assert whoami(session) == "replica1"


def test_read_only_scope_raises_on_writes(cluster: SqliteCluster) -> None:
    router = make_router(cluster)
    Session = router.sessionmaker()
    with Session() as session, router.read_only(session):
        assert whoami(session) == "replica1"
        session.add(User(id=3, name="nope"))
        with pytest.raises(ReadOnlyViolation, match="flush attempted inside a read-only scope"):
            session.flush()
    with Session() as session, router.read_only():
        with pytest.raises(ReadOnlyViolation, match="Insert"):
            session.execute(sa.insert(User).values(id=4, name="nope"))
        with pytest.raises(ReadOnlyViolation, match="TextClause"):
            session.execute(text("DELETE FROM users"))
    with Session() as session:  # outside the scope writes work again
        session.execute(sa.insert(User).values(id=4, name="yes"))
        session.commit()
    assert [e for e in cluster.log.entries if e[1] != "SELECT"] == [("primary", "INSERT")]


def test_replica_connections_are_opened_read_only(cluster: SqliteCluster) -> None:
    router = make_router(cluster)
    replica = router.replicas["replica1"]
    with (
        router.sessionmaker()() as session,
        pytest.raises(sa.exc.OperationalError, match="readonly"),
    ):
        # forcing a write onto a replica connection: refused by the connection itself
        session.execute(text("DELETE FROM users"), bind_arguments={"bind": replica})
    listeners = len(replica.pool.dispatch.connect)
    engines = cluster.engines("primary", "replica1")
    for _ in range(3):  # routers over the same engines add the read-only hook once
        ReadWriteRouter(engines["primary"], [engines["replica1"]])
    assert len(engines["replica1"].pool.dispatch.connect) == listeners
    unprotected = make_router(cluster, read_only_replicas=False)
    with unprotected.sessionmaker()() as session:
        replica = unprotected.replicas["replica1"]
        session.execute(text("DELETE FROM users"), bind_arguments={"bind": replica})
        session.rollback()


def test_force_primary_for_a_block_and_for_one_session(cluster: SqliteCluster) -> None:
    router = make_router(cluster)
    Session = router.sessionmaker()
    with Session() as a, Session() as b:
        with router.force_primary():
            assert whoami(a) == "primary"
            assert whoami(b) == "primary"
        with router.force_primary(a):
            assert whoami(a) == "primary"
            assert whoami(b) in {"replica1", "replica2"}
        assert whoami(a) in {"replica1", "replica2"}


def test_pin_per_transaction_picks_again_after_each_transaction(cluster: SqliteCluster) -> None:
    router = make_router(cluster, pin="transaction")
    with router.sessionmaker()() as session:
        seen = []
        for _ in range(3):
            seen.append(whoami(session))
            assert whoami(session) == seen[-1]
            session.commit()
    assert seen == ["replica1", "replica2", "replica1"]


def test_time_token_sticks_reads_of_the_next_session_to_the_primary(
    cluster: SqliteCluster,
) -> None:
    clock = FakeClock()
    router = make_router(cluster, clock=clock, sticky_for=5.0)
    Session = router.sessionmaker()
    with Session() as session:
        assert router.token(session) is None  # nothing written
        session.add(User(id=9, name="token"))
        with pytest.raises(ScalePatternsError, match="commit before"):
            router.token(session.flush() or session)
        session.commit()
        token = router.token(session)
    assert token is not None
    assert token.startswith("v1:t:")
    clock.advance(4.9)
    with Session(consistency_token=token) as session:
        assert session.get(User, 9).name == "token"  # read from the primary
        assert router.token(session) == token  # carried forward
    clock.advance(0.2)
    with Session(consistency_token=token) as session:
        assert whoami(session) in {"replica1", "replica2"}


def test_a_token_from_the_future_counts_as_now(cluster: SqliteCluster) -> None:
    clock = FakeClock()
    router = make_router(cluster, clock=clock, sticky_for=1.0)
    forged = f"v1:t:{clock.time() + 10_000:.6f}"
    with router.sessionmaker()(consistency_token=forged) as session:
        assert whoami(session) == "primary"
        clock.advance(1.0)
        assert whoami(session) != "primary"  # stuck for sticky_for at most, not 10 000 s


@pytest.mark.parametrize(
    "token",
    ["", "v2:t:1", "v1:t:", "v1:t:abc", "v1:pg:0/zz", "v1:t:1e9", "v1:pg:0/1 ", "x" * 100, 42],
)
def test_malformed_tokens_are_refused(cluster: SqliteCluster, token: object) -> None:
    router = make_router(cluster)
    with pytest.raises(InvalidToken, match="invalid consistency token"):
        router.sessionmaker()(consistency_token=token)


def test_a_token_never_routes_writes(cluster: SqliteCluster) -> None:
    clock = FakeClock()
    router = make_router(cluster, clock=clock)
    old = f"v1:t:{clock.time() - 3600:.6f}"
    with router.sessionmaker()(consistency_token=old) as session:
        assert whoami(session) == "replica1"
        session.execute(sa.insert(User).values(id=10, name="w"))
        session.commit()
    assert ("primary", "INSERT") in cluster.log.entries


def test_a_wal_token_on_a_router_without_wal_positions_reads_from_the_primary(
    cluster: SqliteCluster,
) -> None:
    router = make_router(cluster)
    with router.sessionmaker()(consistency_token="v1:pg:0/16B3748") as session:
        assert whoami(session) == "primary"


class Switch:
    """A SQLite connection factory that can be made to fail like a dead server."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.dead = False

    def __call__(self) -> sqlite3.Connection:
        if self.dead:
            raise sqlite3.OperationalError("unable to open database file (replica is down)")
        return sqlite3.connect(self.path, check_same_thread=False)


def test_a_dead_replica_costs_one_retry_and_is_ejected_then_readmitted(
    cluster: SqliteCluster,
) -> None:
    clock = FakeClock()
    events = EventRecorder()
    listeners = Listeners()
    listeners.add(events)
    switch = Switch(str(cluster.paths["replica1"]))
    r1 = sa.create_engine("sqlite://", creator=switch, poolclass=sa.pool.NullPool)
    cluster.log.attach(r1, "replica1")
    engines = cluster.engines("primary", "replica2")
    router = ReadWriteRouter(
        engines["primary"],
        {"replica1": r1, "replica2": engines["replica2"]},
        clock=clock,
        cooldown=10.0,
        listeners=listeners,
    )
    Session = router.sessionmaker()
    switch.dead = True
    with Session() as session:
        assert whoami(session) == "replica2"  # replica1 failed to connect: retried once
        assert session.get(User, 1).name == "r2-ada"
    assert [e.replica for e in events.of_type(ReplicaEjected)] == ["replica1"]
    assert router.health.in_rotation() == ["replica2"]
    for _ in range(3):  # while ejected, no session even tries replica1
        with Session() as session:
            assert whoami(session) == "replica2"
    switch.dead = False
    clock.advance(10.0)
    router.check()  # the monitor's probe re-admits it
    assert [e.replica for e in events.of_type(ReplicaReadmitted)] == ["replica1"]
    assert sorted({first_read(router) for _ in range(2)}) == ["replica1", "replica2"]


def test_a_replica_dying_mid_transaction_is_dropped_from_the_session(
    cluster: SqliteCluster,
) -> None:
    switch = Switch(str(cluster.paths["replica1"]))
    r1 = sa.create_engine("sqlite://", creator=switch, poolclass=sa.pool.NullPool)
    engines = cluster.engines("primary", "replica2")
    router = ReadWriteRouter(engines["primary"], {"replica1": r1, "replica2": engines["replica2"]})
    with router.sessionmaker()() as session:
        assert whoami(session) == "replica1"
        conn = session.connection(bind_arguments={"bind": r1})
        conn.connection.dbapi_connection.close()  # the server went away mid-transaction
        switch.dead = True
        assert whoami(session) == "replica2"
        session.execute(sa.insert(User).values(id=11, name="after"))
        session.commit()  # the dead replica's connection is no longer part of the commit


def test_a_write_is_never_retried(cluster: SqliteCluster) -> None:
    router = make_router(cluster)
    with router.sessionmaker()() as session:
        session.execute(sa.insert(User).values(id=12, name="once"))
        with pytest.raises(sa.exc.IntegrityError):
            session.execute(sa.insert(User).values(id=12, name="twice"))
    assert cluster.log.entries.count(("primary", "INSERT")) == 2


def test_no_replica_in_rotation_reads_from_the_primary_or_raises(cluster: SqliteCluster) -> None:
    clock = FakeClock()
    router = make_router(cluster, clock=clock)
    for name in router.replicas:
        router.health.record_failure(name)
    with router.sessionmaker()() as session:
        assert whoami(session) == "primary"
    strict = make_router(cluster, clock=clock, no_replica="raise")
    for name in strict.replicas:
        strict.health.record_failure(name)
    with strict.sessionmaker()() as session, pytest.raises(NoHealthyReplica, match="no healthy"):
        whoami(session)


def test_a_router_without_replicas_sends_everything_to_the_primary(
    cluster: SqliteCluster,
) -> None:
    router = ReadWriteRouter(cluster.engines("primary")["primary"])
    with router.sessionmaker()() as session:
        assert whoami(session) == "primary"


def test_route_events_name_target_and_reason(cluster: SqliteCluster) -> None:
    listeners = Listeners()
    events = EventRecorder()
    listeners.add(events, RouteDecided)
    router = make_router(cluster, listeners=listeners)
    with router.sessionmaker()() as session:
        whoami(session)
        session.add(User(id=13, name="e"))
        session.commit()
        whoami(session)
    decisions = [(e.target, e.reason) for e in events.of_type(RouteDecided)]
    # a flush asks once per table and once for its connection: keep each change of decision
    decisions = [d for i, d in enumerate(decisions) if i == 0 or decisions[i - 1] != d]
    assert decisions == [("replica1", "read"), ("primary", "flush"), ("primary", "after_write")]


def test_weighted_and_least_lag_and_callable_balancing(cluster: SqliteCluster) -> None:
    import random

    from scalepatterns.routing import LagSample, Weighted

    router = make_router(
        cluster, balance=Weighted(random.Random(1)), weights={"replica1": 9, "replica2": 1}
    )
    picks = [first_read(router) for _ in range(200)]
    assert 150 < picks.count("replica1") < 200
    lagging = make_router(cluster, balance="least_lag")
    lagging.health.record_sample("replica1", LagSample(lag_bytes=500, lag_seconds=1.0))
    lagging.health.record_sample("replica2", LagSample(lag_bytes=10, lag_seconds=0.1))
    assert {first_read(lagging) for _ in range(5)} == {"replica2"}
    last = make_router(cluster, balance=lambda candidates: candidates[-1])
    assert first_read(last) == "replica2"


def test_configuration_errors(cluster: SqliteCluster) -> None:
    engines = cluster.engines("primary", "replica1")
    primary = engines["primary"]
    with pytest.raises(ConfigurationError, match="other than the primary"):
        ReadWriteRouter(primary, [primary])
    with pytest.raises(ConfigurationError, match="other than the primary"):
        ReadWriteRouter(primary, [sa.create_engine(cluster.url("primary"))])
    with pytest.raises(ConfigurationError, match="other than the replica1"):
        ReadWriteRouter(primary, [engines["replica1"], sa.create_engine(cluster.url("replica1"))])
    with pytest.raises(ConfigurationError, match="dialect 'sqlite'"):
        ReadWriteRouter(primary, [sa.create_engine("postgresql+psycopg://u@127.0.0.1:1/x")])
    with pytest.raises(ConfigurationError, match="pin"):
        ReadWriteRouter(primary, pin="statement")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="balance"):
        ReadWriteRouter(primary, balance="fastest")
    with pytest.raises(ConfigurationError, match="'lsn' only on PostgreSQL"):
        ReadWriteRouter(primary, consistency="lsn")
    with pytest.raises(ConfigurationError, match="weights"):
        ReadWriteRouter(primary, [engines["replica1"]], weights={"nope": 1})
    for parameter in ("token_wait", "sticky_for", "cooldown"):  # inf: wait or stay out forever
        with pytest.raises(ConfigurationError, match=parameter):
            ReadWriteRouter(primary, [engines["replica1"]], **{parameter: float("inf")})
    with pytest.raises(TypeError, match="Engine or AsyncEngine"):
        ReadWriteRouter("sqlite://")  # type: ignore[arg-type]
    router = ReadWriteRouter(primary, [engines["replica1"]])
    with pytest.raises(ConfigurationError, match="async_sessionmaker"):
        router.async_sessionmaker()
    with pytest.raises(ConfigurationError, match="bind"):
        router.sessionmaker(bind=primary)()
    with pytest.raises(TypeError, match="made by this router"):
        router.token(sa.orm.Session())


def test_repr_shows_no_credentials() -> None:
    primary = sa.create_engine("postgresql+psycopg://app:s3cret@127.0.0.1:1/db")
    replica = sa.create_engine("postgresql+psycopg://app:s3cret@127.0.0.1:2/db")
    router = ReadWriteRouter(primary, [replica], read_only_replicas=False)
    assert "s3cret" not in repr(router)
    with pytest.raises(ConfigurationError) as info:
        ReadWriteRouter(
            primary, [sa.create_engine("postgresql+psycopg://app:s3cret@127.0.0.1:1/db")]
        )
    assert "s3cret" not in str(info.value)


def test_a_query_error_on_a_live_replica_is_not_retried(cluster: SqliteCluster) -> None:
    router = make_router(cluster)
    with (
        router.sessionmaker()() as session,
        pytest.raises(sa.exc.OperationalError, match="no such table"),
    ):
        session.execute(text("SELECT * FROM missing_table"))
    assert cluster.log.engines() == ["replica1"]  # tried once, on the replica only
    assert router.health.in_rotation() == ["replica1", "replica2"]


def test_with_one_replica_a_failed_read_is_retried_on_the_primary(
    cluster: SqliteCluster,
) -> None:
    switch = Switch(str(cluster.paths["replica1"]))
    switch.dead = True
    r1 = sa.create_engine("sqlite://", creator=switch, poolclass=sa.pool.NullPool)
    router = ReadWriteRouter(
        cluster.engines("primary")["primary"], {"replica1": r1}, failure_threshold=3
    )
    with router.sessionmaker()() as session:
        assert whoami(session) == "primary"  # not the failed replica again, though in rotation
    assert router.health.in_rotation() == ["replica1"]  # 1 failure of 3 allowed


def test_refresh_with_for_update_and_scalar_reads_route_by_statement(
    cluster: SqliteCluster,
) -> None:
    router = make_router(cluster)
    with router.sessionmaker()() as session:
        user = session.get(User, 1)
        assert user.name == "r1-ada"
        assert session.scalar(sa.select(WHOAMI.c.name)) == "replica1"
        session.refresh(user, with_for_update=True)  # locks: must read the primary
        assert user.name == "primary-ada"
        assert whoami(session) == "primary"  # the transaction holds a lock on the primary
