"""The main routing scenarios again, through AsyncSession over aiosqlite engines."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from scalepatterns.clock import FakeClock
from scalepatterns.errors import ConfigurationError
from scalepatterns.routing import ReadOnlyViolation, ReadWriteRouter
from tests.support.models import WHOAMI, User
from tests.unit.routing.conftest import SqliteCluster


def make_router(cluster: SqliteCluster, **kw: object) -> ReadWriteRouter:
    engines = cluster.async_engines("primary", "replica1", "replica2")
    primary = engines.pop("primary")
    return ReadWriteRouter(primary, engines, **kw)  # type: ignore[arg-type]


async def whoami(session: AsyncSession) -> str:
    return (await session.execute(sa.select(WHOAMI.c.name))).scalar_one()


async def dispose(router: ReadWriteRouter) -> None:
    for engine in [router._given["primary"], *(router._given[n] for n in router.replicas)]:
        await engine.dispose()


def test_async_reads_pin_a_replica_and_writes_go_to_the_primary(cluster: SqliteCluster) -> None:
    async def scenario() -> None:
        router = make_router(cluster)
        Session = router.async_sessionmaker()
        served = []
        for _ in range(2):
            async with Session() as session:
                served.append(await whoami(session))
                assert (await session.get(User, 1)).name.startswith(served[-1][0] + served[-1][-1])
                assert await whoami(session) == served[-1]
        assert served == ["replica1", "replica2"]
        async with Session() as session:
            assert await whoami(session) == "replica1"
            session.add(User(id=2, name="grace"))
            await session.flush()
            assert await whoami(session) == "primary"
            await session.execute(sa.update(User).where(User.id == 1).values(name="ada2"))
            await session.commit()
            user = await session.get(User, 2)
            assert user is not None
            assert user.name == "grace"  # after commit: the primary (replicas have no user 2)
        await dispose(router)

    asyncio.run(scenario())
    assert {e for e in cluster.log.entries if e[1] != "SELECT"} == {
        ("primary", "INSERT"),
        ("primary", "UPDATE"),
    }


def test_async_reload_after_commit_reads_the_primary(cluster: SqliteCluster) -> None:
    async def scenario() -> None:
        router = make_router(cluster)
        async with router.async_sessionmaker()() as session:
            user = User(id=3, name="fresh")
            session.add(user)
            await session.commit()
            await session.refresh(user)
            assert user.name == "fresh"
        await dispose(router)

    asyncio.run(scenario())
    assert all(name == "primary" for name, _ in cluster.log.entries)


def test_async_read_only_scope_and_force_primary(cluster: SqliteCluster) -> None:
    async def scenario() -> None:
        router = make_router(cluster)
        Session = router.async_sessionmaker()
        async with Session() as session:
            with router.read_only(session):
                session.add(User(id=4, name="no"))
                with pytest.raises(ReadOnlyViolation):
                    await session.flush()
        async with Session() as session:
            with router.force_primary():
                assert await whoami(session) == "primary"
            with router.force_primary(session):
                assert await whoami(session) == "primary"
            assert await whoami(session) in {"replica1", "replica2"}
        await dispose(router)

    asyncio.run(scenario())


def test_async_time_token(cluster: SqliteCluster) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        router = make_router(cluster, clock=clock, sticky_for=2.0)
        Session = router.async_sessionmaker()
        async with Session() as session:
            session.add(User(id=5, name="tok"))
            await session.commit()
            token = await router.atoken(session)
        assert token is not None
        async with Session(consistency_token=token) as session:
            assert (await session.get(User, 5)) is not None
            assert await whoami(session) == "primary"
        clock.advance(2.0)
        async with Session(consistency_token=token) as session:
            assert await whoami(session) != "primary"
        await dispose(router)

    asyncio.run(scenario())


def test_async_router_checks_health_and_refuses_sync_sessions(cluster: SqliteCluster) -> None:
    async def scenario() -> None:
        router = make_router(cluster)
        statuses = await router.acheck()
        assert [(s.name, s.in_rotation) for s in statuses] == [
            ("replica1", True),
            ("replica2", True),
        ]
        with pytest.raises(ConfigurationError, match="sync engines"):
            router.sessionmaker()
        with pytest.raises(ConfigurationError, match="acheck"):
            router.check()
        await dispose(router)

    asyncio.run(scenario())
