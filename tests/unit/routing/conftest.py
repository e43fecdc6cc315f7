"""SQLite "clusters" for routing tests: a primary file and replica files.

Each file holds a `whoami` row naming it, and every engine records the statements it ran,
so a test can prove which engine served each statement. Replicas are separate files (no
replication), which makes a read served by the wrong engine visible in the data too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.support.models import WHOAMI, Base, User, tables


@dataclass
class StatementLog:
    """Which engine ran which SQL, in order."""

    entries: list[tuple[str, str]] = field(default_factory=list)

    def attach(self, engine: sa.Engine, name: str) -> None:
        @sa.event.listens_for(engine, "before_cursor_execute")
        def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            if not statement.lstrip().upper().startswith("PRAGMA"):
                self.entries.append((name, statement.split()[0].upper()))

    def engines(self) -> list[str]:
        return [name for name, _ in self.entries]

    def clear(self) -> None:
        self.entries.clear()


def make_database(path: Path, name: str, users: dict[int, str]) -> None:
    engine = sa.create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine, tables=tables(User, WHOAMI))
    with engine.begin() as conn:
        conn.execute(WHOAMI.insert(), {"name": name})
        for uid, uname in users.items():
            conn.execute(User.__table__.insert(), {"id": uid, "name": uname})
    engine.dispose()


@dataclass
class SqliteCluster:
    paths: dict[str, Path]
    log: StatementLog
    created: list[sa.Engine] = field(default_factory=list)

    def url(self, name: str, driver: str = "sqlite") -> str:
        return f"{driver}:///{self.paths[name]}"

    def engines(self, *names: str, driver: str = "sqlite") -> dict[str, sa.Engine]:
        engines = {}
        for name in names:
            engine = sa.create_engine(self.url(name, driver))
            self.log.attach(engine, name)
            engines[name] = engine
            self.created.append(engine)
        return engines

    def async_engines(self, *names: str) -> dict[str, AsyncEngine]:
        engines = {}
        for name in names:
            engine = create_async_engine(self.url(name, "sqlite+aiosqlite"))
            self.log.attach(engine.sync_engine, name)
            engines[name] = engine
            self.created.append(engine.sync_engine)
        return engines


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SqliteCluster]:
    """primary.db (user 1 'primary-ada'), replica1.db and replica2.db (user 1 'rN-ada')."""
    paths = {}
    for name, users in {
        "primary": {1: "primary-ada"},
        "replica1": {1: "r1-ada"},
        "replica2": {1: "r2-ada"},
    }.items():
        paths[name] = tmp_path / f"{name}.db"
        make_database(paths[name], name, users)
    made = SqliteCluster(paths, StatementLog())
    yield made
    for engine in made.created:
        engine.dispose()
