"""Type-level checks of the read/write router, run by mypy --strict, never executed."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker
from typing_extensions import assert_type

from scalepatterns import ConsistencyToken, ReadWriteRouter, RoutingSession
from scalepatterns.routing import ReplicaStatus


async def check() -> None:
    router = ReadWriteRouter(sa.create_engine("sqlite://"), [sa.create_engine("sqlite://")])
    assert_type(router.sessionmaker(), sessionmaker[RoutingSession])
    with router.sessionmaker()() as session:
        assert_type(router.token(session), str | None)
        with router.force_primary(session), router.read_only():
            pass
    assert_type(router.check(), list[ReplicaStatus])
    assert_type(ConsistencyToken.parse("v1:t:1").wall_time, float | None)
    arouter = ReadWriteRouter(create_async_engine("sqlite+aiosqlite://"))
    assert_type(arouter.async_sessionmaker(), async_sessionmaker[AsyncSession])
    async with arouter.async_sessionmaker()() as asession:
        assert_type(await arouter.atoken(asession), str | None)
