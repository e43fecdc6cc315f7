"""Scenarios shared by the sync and async adapters, on embedded and real engines.

Each scenario is a coroutine; `call` turns a sync result or an awaitable into a value, so
the same steps drive `ShardedSession` and `AsyncShardedSession` (and the Redis clients).
"""

from __future__ import annotations

import inspect
from typing import Any

import sqlalchemy as sa

from scalepatterns.sharding import AsyncShardedSession, ShardedSession


async def call(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


def score(i: int) -> int:
    return (i * 37) % 101


async def session_scenario(
    session: ShardedSession | AsyncShardedSession, model: Any, count: int
) -> None:
    """Rows go to the shard of their id; a fan-out merges, orders and limits."""
    session.add_all(model(id=i, name=f"user{i:04d}", score=score(i)) for i in range(count))
    await call(session.commit())
    placement = session.router.placement
    for shard in session.router.shards:
        ids = list(await call(session.session(shard).scalars(sa.select(model.id))))
        assert ids, f"{shard} got no row"
        assert all(placement.node_for(i) == shard for i in ids)
    user = await call(session.get(model, 17))
    assert user is not None
    assert user.name == "user0017"
    found = await call(session.scalars(sa.select(model.name).where(model.id == 17), key=17))
    assert found.one() == "user0017"
    top = await call(
        session.fan_out(
            sa.select(model).order_by(model.score.desc(), model.id).limit(5),
            order_by=lambda u: (-u.score, u.id),
            limit=5,
        )
    )
    expected = sorted(range(count), key=lambda i: (-score(i), i))[:5]
    assert [u.id for u in top] == expected
    names = await call(session.fan_out(sa.select(model.name).order_by(model.name), order_by=str))
    assert names == [f"user{i:04d}" for i in range(count)]
    counts = await call(session.fan_out(sa.select(sa.func.count()).select_from(model)))
    assert sum(counts) == count
    await call(session.delete(user))
    await call(session.commit())
    assert await call(session.get(model, 17)) is None
