"""The outbox tables: SQLAlchemy `Table`s users add to their metadata and migrations."""

from __future__ import annotations

from typing import Any

from scalepatterns._deps import require

__all__ = ["dead_table", "outbox_table"]


def _columns(sa: Any) -> list[Any]:
    return [
        sa.Column("id", sa.String(64), nullable=False, unique=True),  # the message id
        sa.Column("target", sa.String(255), nullable=False),  # a queue, or an event type
        sa.Column("key", sa.String(255), nullable=True),  # rows of one key go out in order
        sa.Column("body", sa.LargeBinary, nullable=False),  # encoded by the serializer
        sa.Column("properties", sa.JSON, nullable=False),  # type, content type, headers...
        sa.Column("created_at", sa.Float, nullable=False),
    ]


def outbox_table(metadata: Any, name: str = "sp_outbox") -> Any:
    """The outbox table on `metadata` (a `sqlalchemy.MetaData`).

    ``seq`` orders rows as they were written (and, for one key, as they were committed);
    the index on ``(key, seq)`` serves the relay's "oldest row of each key" claim.
    """
    sa = require("sqlalchemy", extra="sqlalchemy", feature="the outbox")
    return sa.Table(
        name,
        metadata,
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),  # SQLite's rowid alias
            primary_key=True,
            autoincrement=True,
        ),
        *_columns(sa),
        sa.Index(f"{name}_key_seq", "key", "seq"),
    )


def dead_table(metadata: Any, name: str = "sp_outbox") -> Any:
    """Where the relay moves rows the broker refused for good, with the broker's reason."""
    sa = require("sqlalchemy", extra="sqlalchemy", feature="the outbox")
    return sa.Table(
        f"{name}_dead",
        metadata,
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        *_columns(sa),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("failed_at", sa.Float, nullable=False),
    )
