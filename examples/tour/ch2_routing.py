"""Chapter 2: a read/write router over SQLite files (a primary and two "replicas")."""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from scalepatterns import ReadOnlyViolation, ReadWriteRouter
from scalepatterns.events import Event, Listeners
from scalepatterns.routing import RouteDecided

TITLE = "Read/write router: reads on replicas, writes on the primary, read-your-writes"


class Base(DeclarativeBase):
    pass


class Article(Base):
    __tablename__ = "articles"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]


def run() -> None:
    root = Path(tempfile.mkdtemp(prefix="sp-tour-routing-"))
    try:
        engines = {}
        for name in ("primary", "replica1", "replica2"):
            engine = sa.create_engine(f"sqlite:///{root / name}.db")
            Base.metadata.create_all(engine)
            with engine.begin() as conn:  # SQLite has no replication: seed each file alike
                conn.execute(sa.insert(Article).values(id=1, title="Hello"))
            engines[name] = engine
        served: Counter[tuple[str, str]] = Counter()
        listeners = Listeners()

        def count(event: Event) -> None:
            if isinstance(event, RouteDecided):
                served[(event.target, event.reason)] += 1

        listeners.add(count, RouteDecided)
        router = ReadWriteRouter(
            engines["primary"],
            [engines["replica1"], engines["replica2"]],
            listeners=listeners,
        )
        new_session = router.sessionmaker()

        for _ in range(4):
            with new_session() as session:
                session.get(Article, 1)
                session.get(Article, 1, populate_existing=True)
        reads = {t: n for (t, r), n in served.items() if r == "read"}
        print(f"   4 sessions x 2 reads -> {reads} (one replica per session, round-robin)")

        served.clear()
        with new_session() as session:
            article = Article(id=2, title="Fresh")
            session.add(article)
            session.commit()
            print(
                f"   a write, then its reload after commit: {article.title!r} served by "
                f"{sorted({t for t, _ in served})} (the replicas do not have it)"
            )
            token = router.token(session)
        print(f"   consistency token for the next request: {token}")
        served.clear()
        with new_session(consistency_token=token) as session:
            session.get(Article, 2)
        print(f"   next request with the token reads from: {sorted({t for t, _ in served})}")

        with new_session() as session, router.read_only(session):
            session.add(Article(id=3, title="Nope"))
            try:
                session.flush()
            except ReadOnlyViolation as exc:
                print(f"   read-only scope: {type(exc).__name__} ({str(exc)[:60]}...)")

        print(f"   replicas in rotation: {router.health.in_rotation()}")
        for engine in engines.values():
            engine.dispose()
    finally:
        shutil.rmtree(root, ignore_errors=True)
