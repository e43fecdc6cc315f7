"""SQLAlchemy sessions that route entities to the shard of their shard key.

`ShardedSession` (sync engines) and `AsyncShardedSession` (async engines) share their
routing: one session per shard, opened on demand; entities go to the shard of their shard
key; `fan_out` runs a statement on every shard and merges, orders and limits the rows.

Imports SQLAlchemy, so `scalepatterns.sharding` loads this module only on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from operator import attrgetter
from typing import Any, TypeVar

from scalepatterns._deps import require
from scalepatterns._steps import Flow, adrive, drive
from scalepatterns.errors import ConfigurationError
from scalepatterns.sharding._keys import Key
from scalepatterns.sharding.router import ShardRouter, merge_sorted

orm = require("sqlalchemy.orm", extra="sqlalchemy", feature="ShardedSession")

__all__ = ["AsyncShardedSession", "ShardedSession"]

T = TypeVar("T")
OrderBy = str | Callable[[Any], Any] | None


class _ShardedSessions:
    """What the sync and async sessions share: shard keys, and one session per shard.

    Everything here is synchronous in both (opening a session, `add`); the I/O methods
    live in each subclass, so neither flavour is a subclass of the other.
    """

    def __init__(
        self,
        router: ShardRouter[Any],
        shard_keys: Mapping[type, str],
        factory: Callable[[Any], Any],
    ) -> None:
        if not shard_keys:
            raise ConfigurationError("shard_keys", shard_keys, "{EntityClass: 'attribute'}")
        self.router = router
        self._shard_keys = dict(shard_keys)
        self._factory = factory
        self._open: dict[str, Any] = {}

    def session(self, shard: str) -> Any:
        """The session of shard id `shard` (opened on first use)."""
        session = self._open.get(shard)
        if session is None:
            session = self._open[shard] = self._factory(self.router.resource(shard))
        return session

    def _closing(self) -> Flow[None]:
        """Close every open session; one that fails to close does not keep the others
        open (the first error is raised after all were tried)."""
        sessions, self._open = list(self._open.values()), {}
        errors: list[Exception] = []
        for session in sessions:
            try:
                yield session.close, ()
            except Exception as exc:  # noqa: BLE001, PERF203 - collected, the first re-raised
                errors.append(exc)
        if errors:
            raise errors[0]

    def for_key(self, key: Key) -> Any:
        """The session of the shard owning `key`."""
        return self.session(self.router.shard_for(key))

    def shard_key_of(self, instance: object) -> Key:
        """The shard key of an entity instance, read from its `shard_keys` attribute."""
        for cls in type(instance).__mro__:
            attribute = self._shard_keys.get(cls)
            if attribute is not None:
                key = getattr(instance, attribute)
                if key is None:
                    raise ConfigurationError(
                        attribute, None, f"a shard key on {type(instance).__name__} before add()"
                    )
                return key  # type: ignore[no-any-return]
        raise ConfigurationError(
            "shard_keys", sorted(c.__name__ for c in self._shard_keys), type(instance).__name__
        )

    def add(self, instance: object) -> None:
        """Add `instance` to the session of its shard."""
        self._for_instance(instance).add(instance)

    def add_all(self, instances: Iterable[object]) -> None:
        for instance in instances:
            self.add(instance)

    def _for_instance(self, instance: object) -> Any:
        return self.for_key(self.shard_key_of(instance))

    def _all_sessions(self) -> dict[str, Any]:
        """A session for every shard (opened now, so fan-out threads never create one)."""
        return {shard: self.session(shard) for shard in self.router.shards}

    def _merge(
        self,
        parts: Mapping[str, list[Any]],
        order_by: OrderBy,
        reverse: bool,
        limit: int | None,
    ) -> list[Any]:
        ordered = [parts[s] for s in self.router.shards if s in parts]
        if order_by is None:
            rows = [row for part in ordered for row in part]
            return rows if limit is None else rows[:limit]
        key = attrgetter(order_by) if isinstance(order_by, str) else order_by
        return merge_sorted(ordered, key=key, reverse=reverse, limit=limit)


def _rows(result: Any, scalars: bool) -> list[Any]:
    return list(result.scalars() if scalars else result)


class ShardedSession(_ShardedSessions):
    """One SQLAlchemy `Session` per shard, opened on demand, behind one object.

    Entities go to the shard of their shard key: `add(user)` reads ``user.<attribute>``
    named in `shard_keys` and adds it to that shard's session. `get`, `execute` and
    `scalars` take the key explicitly. `fan_out` runs one statement on every shard (in
    threads, one session per shard) and merges the rows: give each shard's statement
    its own ``ORDER BY ... LIMIT n`` and `order_by`/`limit` here, and the merged first n
    rows are the global first n.

    `commit` commits each shard's session in turn: there is no two-phase commit, so a
    unit of work should stay on one shard (shard by the key that groups it, like a user).

    Args:
        router: a `ShardRouter` whose resources are SQLAlchemy engines.
        shard_keys: ``{EntityClass: "attribute"}``: the attribute holding each entity's
            shard key (the primary key, or a column such as ``tenant_id``).
        session_options: passed to every `Session` (e.g. ``expire_on_commit=False``).
    """

    def __init__(
        self,
        router: ShardRouter[Any],
        shard_keys: Mapping[type, str],
        **session_options: Any,
    ) -> None:
        super().__init__(router, shard_keys, lambda bind: orm.Session(bind, **session_options))

    def delete(self, instance: object) -> None:
        self._for_instance(instance).delete(instance)

    def get(self, entity: type[T], ident: Any, *, key: Key | None = None) -> T | None:
        """`Session.get` on the shard of `key` (default: `ident`, when sharded by its id)."""
        return self.for_key(ident if key is None else key).get(entity, ident)  # type: ignore[no-any-return]

    def execute(self, statement: Any, *, key: Key, **kwargs: Any) -> Any:
        """Execute `statement` on the shard owning `key`."""
        return self.for_key(key).execute(statement, **kwargs)

    def scalars(self, statement: Any, *, key: Key, **kwargs: Any) -> Any:
        return self.for_key(key).scalars(statement, **kwargs)

    def fan_out(
        self,
        statement: Any,
        *,
        order_by: OrderBy = None,
        reverse: bool = False,
        limit: int | None = None,
        scalars: bool = True,
    ) -> list[Any]:
        """Run `statement` on every shard (in threads) and merge the results.

        Args:
            statement: a `select()`; for a correct merge it should be ordered like
                `order_by` (and may carry ``.limit(limit)``).
            order_by: an attribute name or a function giving each row's sort key; None
                concatenates the shards' results in shard order.
            reverse: `order_by` is descending.
            limit: keep the first `limit` merged rows.
            scalars: return ORM objects / first columns (True) or `Row`s (False).

        Raises:
            FanOutError: a shard failed; `.results` holds the other shards' rows.
        """
        sessions = self._all_sessions()
        parts = self.router.fan_out(
            lambda shard, _engine: _rows(sessions[shard].execute(statement), scalars)
        )
        return self._merge(parts, order_by, reverse, limit)

    def flush(self) -> None:
        for session in self._open.values():
            session.flush()

    def commit(self) -> None:
        """Commit every open shard session, one after another (no two-phase commit)."""
        for session in self._open.values():
            session.commit()

    def rollback(self) -> None:
        for session in self._open.values():
            session.rollback()

    def close(self) -> None:
        """Close every shard's session; one that fails to close does not keep the others
        open (the first error is raised after all were tried)."""
        drive(self._closing())

    def __enter__(self) -> ShardedSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncShardedSession(_ShardedSessions):
    """`ShardedSession` for async engines: one `AsyncSession` per shard.

    The same routing as `ShardedSession`; `fan_out` awaits every shard concurrently.

    Args:
        router: a `ShardRouter` whose resources are `AsyncEngine`s.
        shard_keys: ``{EntityClass: "attribute"}``.
        session_options: passed to every `AsyncSession`.
    """

    def __init__(
        self,
        router: ShardRouter[Any],
        shard_keys: Mapping[type, str],
        **session_options: Any,
    ) -> None:
        aio = require("sqlalchemy.ext.asyncio", extra="sqlalchemy", feature="AsyncShardedSession")
        super().__init__(router, shard_keys, lambda bind: aio.AsyncSession(bind, **session_options))

    async def delete(self, instance: object) -> None:
        await self._for_instance(instance).delete(instance)

    async def get(self, entity: type[T], ident: Any, *, key: Key | None = None) -> T | None:
        return await self.for_key(ident if key is None else key).get(entity, ident)  # type: ignore[no-any-return]

    async def execute(self, statement: Any, *, key: Key, **kwargs: Any) -> Any:
        return await self.for_key(key).execute(statement, **kwargs)

    async def scalars(self, statement: Any, *, key: Key, **kwargs: Any) -> Any:
        return await self.for_key(key).scalars(statement, **kwargs)

    async def fan_out(
        self,
        statement: Any,
        *,
        order_by: OrderBy = None,
        reverse: bool = False,
        limit: int | None = None,
        scalars: bool = True,
    ) -> list[Any]:
        """`ShardedSession.fan_out`, awaiting every shard concurrently."""
        sessions = self._all_sessions()

        async def run(shard: str, _engine: Any) -> list[Any]:
            return _rows(await sessions[shard].execute(statement), scalars)

        parts = await self.router.afan_out(run)
        return self._merge(parts, order_by, reverse, limit)

    async def flush(self) -> None:
        for session in self._open.values():
            await session.flush()

    async def commit(self) -> None:
        """Commit every open shard session, one after another (no two-phase commit)."""
        for session in self._open.values():
            await session.commit()

    async def rollback(self) -> None:
        for session in self._open.values():
            await session.rollback()

    async def close(self) -> None:
        """Close every shard's session; see `ShardedSession.close`."""
        await adrive(self._closing())

    async def __aenter__(self) -> AsyncShardedSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
