"""The SQLAlchemy models the tests share: one declarative base, one class per table.

A test creates only the tables it uses, so a database holds nothing else:

```python
Base.metadata.create_all(engine, tables=tables(User, WHOAMI))
```
"""

from __future__ import annotations

from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    """Routing: each database holds its own names, so a read shows which one served it."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Member(Base):
    """Sharding: rows placed by `id`, fanned out and merged by `score`."""

    __tablename__ = "members"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    score: Mapped[int]


class Account(Base):
    """Resharding on PostgreSQL: every row is checksummed before and after a move."""

    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str]
    balance: Mapped[int]


class Article(Base):
    """The router's metrics, spans and log lines."""

    __tablename__ = "articles"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]


class Order(Base):
    """The outbox: the caller's own write, in the same transaction as the event."""

    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    item: Mapped[str]


class Item(Base):
    """PostgreSQL streaming replication and failover: rows a replica replays."""

    __tablename__ = "sp_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    v: Mapped[str]


WHOAMI = sa.Table("whoami", Base.metadata, sa.Column("name", sa.String, primary_key=True))
"""Routing on SQLite: one row naming the database file."""


def tables(*models: type[Base] | sa.Table) -> list[sa.Table]:
    """The tables of `models`, for ``create_all(engine, tables=...)`` and ``drop_all``."""
    return [m if isinstance(m, sa.Table) else cast(sa.Table, m.__table__) for m in models]
