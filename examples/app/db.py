"""The users table, the shard databases (a primary and a replica each) and a query counter."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from examples.app.settings import Settings
from scalepatterns.events import Listeners
from scalepatterns.outbox import Outbox
from scalepatterns.routing import ReadWriteRouter
from scalepatterns.sharding import HashRing, ShardRouter


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    email: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    name: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    updated_at: Mapped[float] = mapped_column(sa.Float, nullable=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "email": self.email, "name": self.name}


# The signup event is written in the signup's own transaction, on the user's shard; each
# shard's outbox relay publishes it after the commit (the tables join the users table).
OUTBOX = Outbox(Base.metadata, name="sp_app_outbox")


class QueryCounter:
    """Counts the SQL statements each engine ran, by role (``primary`` / ``replica``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def attach(self, engine: sa.Engine, role: str) -> None:
        """Count `engine`'s statements as `role`'s (an `AsyncEngine`'s sync engine for async)."""

        def count(*_: object) -> None:
            with self._lock:
                self.counts[role] += 1

        event.listen(engine, "before_cursor_execute", count)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"primary": self.counts["primary"], "replica": self.counts["replica"]}


def _sqlite_urls(settings: Settings, directory: Path, shard: str) -> tuple[str, str]:
    path = directory / f"{settings.prefix}_{shard}.db"
    driver = "sqlite+aiosqlite" if settings.asynchronous else "sqlite"
    # The embedded "replica": the same file opened read-only. It never lags, but every
    # read it serves is counted apart from the primary's, as a real replica's would be.
    return f"{driver}:///{path}", f"{driver}:///file:{path}?mode=ro&uri=true"


def _wal(dbapi_connection: Any, _record: object) -> None:
    # WAL lets the replica connections read while the primary writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _postgres_database(server_url: str, database: str) -> str:
    url = sa.make_url(server_url)
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": database}
            )
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    finally:
        admin.dispose()
    return url.set(database=database).render_as_string(hide_password=False)


def _async_driver(url: sa.URL) -> sa.URL:
    """psycopg 3 serves both builds; SQLAlchemy picks its async dialect for an AsyncEngine."""
    if url.drivername in ("postgresql", "postgresql+psycopg2"):
        return url.set(drivername="postgresql+psycopg")
    return url


def _postgres_urls(settings: Settings, shard: str) -> tuple[sa.URL, sa.URL]:
    assert settings.postgres_url is not None
    database = f"{settings.prefix}_{shard}".lower()
    primary = sa.make_url(_postgres_database(settings.postgres_url, database))
    if settings.postgres_replica_url:
        replica = sa.make_url(settings.postgres_replica_url).set(database=database)
    else:
        # No replica configured: a second pool on the primary stands in for one, so the
        # reads are still counted apart (its connections are opened read-only).
        replica = primary.update_query_dict({"application_name": "sp_app_replica"})
    if settings.asynchronous:
        return _async_driver(primary), _async_driver(replica)
    return primary, replica


def _create_tables(url: str | sa.URL) -> None:
    """CREATE TABLE on a shard's primary, through a sync engine whatever the build (the
    async build does it once at startup, in a thread)."""
    url = sa.make_url(url)
    if url.drivername == "sqlite+aiosqlite":
        url = url.set(drivername="sqlite")
    engine = sa.create_engine(url)
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()


class Databases:
    """The shard databases: a `ShardRouter` from user id to each shard's `ReadWriteRouter`.

    The sync builds run on `Engine`s and hand out `Session`s; the async build runs on
    `AsyncEngine`s (aiosqlite, psycopg's async driver) and hands out `AsyncSession`s from
    the routers' `async_sessionmaker()`. Creating one provisions the shards (databases and
    tables, sync I/O): the async build does it in a thread at startup.
    """

    def __init__(
        self,
        settings: Settings,
        counter: QueryCounter | None = None,
        listeners: Listeners | None = None,
    ) -> None:
        self.settings = settings
        self.asynchronous = settings.asynchronous
        self.counter = counter or QueryCounter()
        self._temporary: Path | None = None  # made for the SQLite files, removed at dispose
        self.primaries: dict[str, Any] = {}  # Engine, or AsyncEngine in the async build
        self.replicas: dict[str, Any] = {}
        routers: dict[str, ReadWriteRouter] = {}
        real_replica = bool(settings.postgres_url and settings.postgres_replica_url)
        create_engine: Callable[..., Any] = (
            create_async_engine if self.asynchronous else sa.create_engine
        )
        for i in range(settings.shards):
            shard = f"s{i}"
            if settings.postgres_url:
                primary_url, replica_url = _postgres_urls(settings, shard)
                options: dict[str, Any] = {"pool_size": 10, "max_overflow": 20}
            else:
                primary_url, replica_url = _sqlite_urls(settings, self._sqlite_dir(), shard)
                options = {"connect_args": {"timeout": 30}}
            _create_tables(primary_url)
            primary = create_engine(primary_url, **options)
            replica = create_engine(replica_url, **options)
            if not settings.postgres_url:
                event.listen(_sync(primary), "connect", _wal)
            self.counter.attach(_sync(primary), "primary")
            self.counter.attach(_sync(replica), "replica")
            self.primaries[shard], self.replicas[shard] = primary, replica
            routers[shard] = ReadWriteRouter(
                primary,
                {"replica": replica},
                name=f"users-{shard}",
                # WAL tokens need a real replica; a stand-in uses commit-time tokens.
                consistency="auto" if real_replica else "time",
                sticky_for=settings.token_window,
                listeners=listeners,
            )
        self.shards: ShardRouter[ReadWriteRouter] = ShardRouter(
            HashRing(list(routers)), routers, name="users", listeners=listeners
        )
        if self.asynchronous:
            self._routed: dict[str, Any] = {
                shard: r.async_sessionmaker(expire_on_commit=False) for shard, r in routers.items()
            }
        else:
            self._routed = {
                shard: r.sessionmaker(expire_on_commit=False) for shard, r in routers.items()
            }
        # plain sessions on the primaries, for the naive build (which is sync only)
        self._plain: dict[str, sessionmaker[Session]] = (
            {}
            if self.asynchronous
            else {
                shard: sessionmaker(bind=engine, expire_on_commit=False)
                for shard, engine in self.primaries.items()
            }
        )

    def _sqlite_dir(self) -> Path:
        if self.settings.data_dir is not None:
            return self.settings.data_dir
        if self._temporary is None:
            self._temporary = Path(tempfile.mkdtemp(prefix="sp-app-"))
        return self._temporary

    def shard_of(self, user_id: int) -> str:
        return self.shards.shard_for(str(user_id))

    def router(self, user_id: int) -> ReadWriteRouter:
        """The read/write router of the user's shard."""
        return self.shards.resource(self.shard_of(user_id))

    def session(self, user_id: int, token: str | None = None) -> Any:
        """A routed session on the user's shard (reads to its replica, writes to its
        primary): a `Session` for ``with``, or an `AsyncSession` for ``async with``."""
        return self._routed[self.shard_of(user_id)](consistency_token=token)

    def primary_session(self, user_id: int) -> Session:
        """A plain session on the primary of the user's shard (the naive build)."""
        return self._plain[self.shard_of(user_id)]()

    def token(self, user_id: int, session: Session) -> str | None:
        return self.router(user_id).token(session)

    async def atoken(self, user_id: int, session: AsyncSession) -> str | None:
        return await self.router(user_id).atoken(session)

    def seed(self, count: int, start: int = 1) -> None:
        """Insert users `start .. start+count-1` (the load test's population) not there yet
        (sync `Databases` only, as `drop`)."""
        now = time.time()
        groups = self.shards.group_by_shard([str(i) for i in range(start, start + count)])
        for shard, keys in groups.items():
            rows = [
                {
                    "id": int(k),
                    "email": f"user{k}@example.com",
                    "name": f"User {k}",
                    "updated_at": now,
                }
                for k in keys
            ]
            with self.primaries[shard].begin() as conn:
                existing = set(
                    conn.scalars(sa.select(User.id).where(User.id.in_([r["id"] for r in rows])))
                )
                fresh = [r for r in rows if r["id"] not in existing]
                if fresh:
                    conn.execute(sa.insert(User), fresh)

    def drop(self) -> None:
        """Drop the users and outbox tables (tests and the load test clean up with it)."""
        for engine in self.primaries.values():
            Base.metadata.drop_all(engine)

    def dispose(self) -> None:
        for engine in [*self.primaries.values(), *self.replicas.values()]:
            engine.dispose()
        self._remove_temporary()

    async def adispose(self) -> None:
        for engine in [*self.primaries.values(), *self.replicas.values()]:
            await engine.dispose()
        self._remove_temporary()

    def _remove_temporary(self) -> None:
        directory, self._temporary = self._temporary, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def _sync(engine: Any) -> sa.Engine:
    """The `Engine` events are registered on (an `AsyncEngine`'s sync engine)."""
    return getattr(engine, "sync_engine", engine)  # type: ignore[no-any-return]
