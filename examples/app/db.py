"""The users table, the shard databases (a primary and a replica each) and a query counter."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from examples.app.settings import Settings
from scalepatterns.events import Listeners
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


class QueryCounter:
    """Counts the SQL statements each engine ran, by role (``primary`` / ``replica``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def attach(self, engine: sa.Engine, role: str) -> None:
        def count(*_: object) -> None:
            with self._lock:
                self.counts[role] += 1

        event.listen(engine, "before_cursor_execute", count)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"primary": self.counts["primary"], "replica": self.counts["replica"]}


def _sqlite_engines(settings: Settings, shard: str) -> tuple[sa.Engine, sa.Engine]:
    path = settings.data_dir / f"{settings.prefix}_{shard}.db"
    primary = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})

    @event.listens_for(primary, "connect")
    def _wal(dbapi_connection: Any, _record: object) -> None:
        # WAL lets the replica connections read while the primary writes.
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    # The embedded "replica": the same file opened read-only. It never lags, but every
    # read it serves is counted apart from the primary's, as a real replica's would be.
    replica = sa.create_engine(
        f"sqlite:///file:{path}?mode=ro&uri=true", connect_args={"timeout": 30}
    )
    return primary, replica


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


def _postgres_engines(settings: Settings, shard: str) -> tuple[sa.Engine, sa.Engine]:
    assert settings.postgres_url is not None
    database = f"{settings.prefix}_{shard}".lower()
    primary_url = _postgres_database(settings.postgres_url, database)
    primary = sa.create_engine(primary_url, pool_size=10, max_overflow=20)
    if settings.postgres_replica_url:
        replica_url = sa.make_url(settings.postgres_replica_url).set(database=database)
    else:
        # No replica configured: a second pool on the primary stands in for one, so the
        # reads are still counted apart (its connections are opened read-only).
        replica_url = sa.make_url(primary_url).update_query_dict(
            {"application_name": "sp_app_replica"}
        )
    replica = sa.create_engine(replica_url, pool_size=10, max_overflow=20)
    return primary, replica


class Databases:
    """The shard databases: a `ShardRouter` from user id to each shard's `ReadWriteRouter`."""

    def __init__(
        self,
        settings: Settings,
        counter: QueryCounter | None = None,
        listeners: Listeners | None = None,
    ) -> None:
        self.settings = settings
        self.counter = counter or QueryCounter()
        self.primaries: dict[str, sa.Engine] = {}
        self.replicas: dict[str, sa.Engine] = {}
        routers: dict[str, ReadWriteRouter] = {}
        real_replica = bool(settings.postgres_url and settings.postgres_replica_url)
        for i in range(settings.shards):
            shard = f"s{i}"
            if settings.postgres_url:
                primary, replica = _postgres_engines(settings, shard)
            else:
                primary, replica = _sqlite_engines(settings, shard)
            Base.metadata.create_all(primary)
            self.counter.attach(primary, "primary")
            self.counter.attach(replica, "replica")
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
        self._routed = {
            shard: r.sessionmaker(expire_on_commit=False) for shard, r in routers.items()
        }
        self._plain = {
            shard: sessionmaker(bind=engine, expire_on_commit=False)
            for shard, engine in self.primaries.items()
        }

    def shard_of(self, user_id: int) -> str:
        return self.shards.shard_for(str(user_id))

    @contextmanager
    def session(self, user_id: int, token: str | None = None) -> Iterator[Session]:
        """A routed session on the user's shard (reads to its replica, writes to its primary)."""
        shard = self.shard_of(user_id)
        with self._routed[shard](consistency_token=token) as session:
            yield session

    @contextmanager
    def primary_session(self, user_id: int) -> Iterator[Session]:
        """A plain session on the primary of the user's shard (the naive build)."""
        with self._plain[self.shard_of(user_id)]() as session:
            yield session

    def token(self, user_id: int, session: Session) -> str | None:
        return self.shards.resource(self.shard_of(user_id)).token(session)

    def seed(self, count: int, start: int = 1) -> None:
        """Insert users `start .. start+count-1` (the load test's population) not there yet."""
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
        """Drop the users tables (tests and the load test clean up with it)."""
        for engine in self.primaries.values():
            Base.metadata.drop_all(engine)

    def dispose(self) -> None:
        for engine in [*self.primaries.values(), *self.replicas.values()]:
            engine.dispose()
