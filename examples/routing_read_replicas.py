"""Read replicas, the seeds' way and the scalepatterns way (SQLite files, no server needed).

The seed projects route with a Django-style router::

    class PrimaryReplicaRouter:
        def db_for_read(self, model, **hints):
            return random.choice(["replica1", "replica2"])
        def db_for_write(self, model, **hints):
            return "default"

which is SQLAlchemy's documented ``get_bind()`` recipe in another framework. It has no idea
what a session already wrote, so a user who just saved something reads a replica that has
not replayed it yet. This example runs that recipe and `ReadWriteRouter` side by side on a
primary file and two replica files that never receive the writes (a replica lagging
forever), and shows what a request handler sees.

Run: ``python examples/routing_read_replicas.py``
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.sql.dml import Delete, Update

from scalepatterns import ReadWriteRouter


class Base(DeclarativeBase):
    pass


class Profile(Base):
    __tablename__ = "profiles"
    id: Mapped[int] = mapped_column(primary_key=True)
    display_name: Mapped[str]


def make_engines(root: Path) -> dict[str, sa.Engine]:
    engines = {}
    for name in ("default", "replica1", "replica2"):
        engine = sa.create_engine(f"sqlite:///{root / name}.db")
        Base.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(sa.insert(Profile).values(id=1, display_name="ada"))
        engines[name] = engine
    return engines


def seed_style_sessionmaker(engines: dict[str, sa.Engine]) -> sessionmaker[Session]:
    """The db_for_read / db_for_write router as SQLAlchemy's recipe writes it."""

    class SeedRoutingSession(Session):
        def get_bind(self, mapper: Any = None, clause: Any = None, **kw: Any) -> sa.Engine:
            if self._flushing or isinstance(clause, (Update, Delete)):
                return engines["default"]  # db_for_write
            return engines[random.choice(["replica1", "replica2"])]  # db_for_read

    return sessionmaker(class_=SeedRoutingSession)


def rename_then_show(new_session: Any, token_for: Any = None) -> tuple[str, str]:
    """Two requests: POST renames the profile; GET shows it (carrying a token if given)."""
    with new_session() as session:  # POST /profile
        profile = session.get(Profile, 1)
        profile.display_name = "Ada Lovelace"
        session.commit()
        after_commit = profile.display_name  # the reload SQLAlchemy does after commit
        token = token_for(session) if token_for else None
    kwargs = {"consistency_token": token} if token else {}
    with new_session(**kwargs) as session:  # GET /profile, the next request
        shown = session.get(Profile, 1).display_name
    return after_commit, shown


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="sp-example-routing-"))
    try:
        engines = make_engines(root)
        after_commit, shown = rename_then_show(seed_style_sessionmaker(engines))
        print("seed-style router (db_for_read -> replica, db_for_write -> primary):")
        print(f"  POST reload after commit: {after_commit!r}   next GET: {shown!r}   <- stale")

        router = ReadWriteRouter(
            engines["default"], {"replica1": engines["replica1"], "replica2": engines["replica2"]}
        )
        after_commit, shown = rename_then_show(router.sessionmaker(), router.token)
        print("scalepatterns ReadWriteRouter (token carried to the next request):")
        print(f"  POST reload after commit: {after_commit!r}   next GET: {shown!r}")
        with router.sessionmaker()() as session:
            other = session.get(Profile, 1).display_name
        print(f"  another user's GET, no token, within the lag: {other!r} (a replica)")
        for engine in engines.values():
            engine.dispose()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
