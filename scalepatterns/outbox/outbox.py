"""`Outbox`: write an event in the caller's own database transaction."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from scalepatterns._deps import require
from scalepatterns._steps import Flow, adrive, drive
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError, ScalePatternsError
from scalepatterns.outbox.table import dead_table, outbox_table
from scalepatterns.queue.message import encode
from scalepatterns.serializers import JsonSerializer, Serializer

__all__ = ["Outbox", "OutboxError"]

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class OutboxError(ScalePatternsError):
    """`Outbox.add` cannot write atomically with the caller's write (and did not write)."""


class Outbox:
    """Events written in the same database transaction as the change they announce; an
    `OutboxRelay` publishes them after the commit, so they commit or roll back together.

    Args:
        metadata: the `sqlalchemy.MetaData` the outbox tables join (a new one by default):
            ``<name>`` and ``<name>_dead`` go into your migrations with your own tables.
        name: the table name; also the PostgreSQL ``NOTIFY`` channel the relay listens on.
        serializer: encodes bodies at `add` time (JSON by default).

    ```python
    import sqlalchemy as sa
    from sqlalchemy.orm import Session
    from scalepatterns.outbox import Outbox

    engine = sa.create_engine("sqlite://")
    outbox = Outbox()
    outbox.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        # ... session.add(user) ...
        outbox.add(session, "user.signed_up", {"id": 7}, key="user:7")
    ```
    """

    def __init__(
        self,
        metadata: Any = None,
        *,
        name: str = "sp_outbox",
        serializer: Serializer | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._sa = require("sqlalchemy", extra="sqlalchemy", feature="the outbox")
        if not isinstance(name, str) or not _IDENTIFIER.match(name):
            raise ConfigurationError("name", name, "a lower-case SQL identifier of 1..63 chars")
        self.metadata = metadata if metadata is not None else self._sa.MetaData()
        self.name = name
        self.table = outbox_table(self.metadata, name)
        self.dead = dead_table(self.metadata, name)
        self.serializer = serializer or JsonSerializer()
        self.clock = clock

    def add(
        self,
        session: Any,
        target: str,
        body: Any,
        *,
        message_id: str | None = None,
        key: str | None = None,
        type: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """Write an event to publish to `target` once this transaction commits; return
        its message id (the outbox row's id: a consumer's dedup store absorbs copies).

        Args:
            session: the caller's SQLAlchemy `Session` (a `ReadWriteRouter` session, or a
                `ShardedSession` with `key` as the shard key: the row lands where the
                write does).
            target: a queue name (relayed by a `Producer`) or an event type (relayed by
                an `EventBus`).
            key: events with the same key are published in commit order.
            type: the message type (defaults to `target`).

        Raises `OutboxError` when the session's connection autocommits (the row would
        commit alone) or is read-only (a replica); `SerializationError` for a body the
        serializer cannot encode. Nothing is written then.
        """
        return drive(self._add(session, target, body, message_id, key, type, headers))

    async def aadd(
        self,
        session: Any,
        target: str,
        body: Any,
        *,
        message_id: str | None = None,
        key: str | None = None,
        type: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """`add` for an `AsyncSession` (or an `AsyncShardedSession`)."""
        return await adrive(self._add(session, target, body, message_id, key, type, headers))

    def _add(  # noqa: PLR0917 - add's own arguments, passed through
        self,
        session: Any,
        target: str,
        body: Any,
        message_id: str | None,
        key: str | None,
        type: str | None,
        headers: Mapping[str, Any] | None,
    ) -> Flow[str]:
        sa = self._sa
        if not target or not isinstance(target, str) or len(target) > 255:
            raise ConfigurationError("target", target, "a queue name or event type, 1..255 chars")
        if key is not None and (not isinstance(key, str) or len(key) > 255):
            raise ConfigurationError("key", key, "a string of up to 255 chars, or None")
        if hasattr(session, "for_key"):  # a sharded session: the shard of the key
            if key is None:
                raise ConfigurationError("key", key, "the shard key, with a sharded session")
            session = session.for_key(key)
        data, props = encode(
            body,
            self.serializer,
            self.clock,
            message_id=message_id,
            type=type or target,
            headers=headers,
        )
        connection = yield session.connection, ()
        _check_transactional(getattr(connection, "sync_connection", None) or connection)
        row = {
            "id": props.message_id,
            "target": target,
            "key": key,
            "body": data,
            "properties": _properties(props),
            "created_at": self.clock.time(),
        }
        insert = sa.insert(self.table).values(row)
        if connection.dialect.name == "postgresql":
            # One statement: writers of one key take turns until they commit (so the
            # relay's order, by seq, is their commit order), and relays that LISTEN are
            # notified at commit.
            effects = [sa.func.pg_notify(self.name, "").label("notify")]
            if key is not None:
                lock = sa.func.hashtextextended(f"{self.name}:{key}", 0)
                effects.append(sa.func.pg_advisory_xact_lock(lock).label("turn"))
            values = sa.select(
                *(sa.bindparam(f"sp_{c}", v, type_=self.table.c[c].type) for c, v in row.items())
            ).select_from(sa.select(*effects).subquery())
            insert = sa.insert(self.table).from_select(list(row), values)
        try:
            yield session.execute, (insert,)
        except sa.exc.DBAPIError as exc:
            if "read-only" in str(exc.orig):
                raise OutboxError(
                    "the session's connection is read-only (a replica?): add the event in "
                    "the transaction of the write, on the primary"
                ) from exc
            raise
        return props.message_id or ""

    def __repr__(self) -> str:
        return f"Outbox({self.name!r})"


def _check_transactional(connection: Any) -> None:
    detect = getattr(connection.dialect, "detect_autocommit_setting", None)
    autocommit = connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT" or (
        detect is not None and detect(connection.connection.dbapi_connection)
    )
    if autocommit:
        raise OutboxError(
            "the session's connection autocommits, so the outbox row would commit alone: add "
            "the event in the transaction of the write (a session without AUTOCOMMIT)"
        )


def _properties(props: Any) -> dict[str, Any]:
    return {
        "type": props.type,
        "content_type": props.content_type,
        "timestamp": props.timestamp,
        "headers": dict(props.headers),
    }
