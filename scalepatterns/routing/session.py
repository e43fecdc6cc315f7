"""`RoutingSession`: a SQLAlchemy `Session` whose `get_bind()` asks the router where to go.

SQLAlchemy's documented recipe for read replicas overrides `Session.get_bind()` and sends
flushes, UPDATE and DELETE to the leader and everything else to a random follower. That
recipe sends a bare ``insert()`` and ``SELECT ... FOR UPDATE`` to a follower, lets the reads
of a transaction that already wrote (and the attribute reloads after ``commit()``) hit a
follower that has not replayed the write yet, and hops between followers statement by
statement. This session fixes those: see `ReadWriteRouter` for the rules.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from typing import Any, Protocol

from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import GenerativeSelect, TextualSelect

from scalepatterns.errors import ConfigurationError
from scalepatterns.routing.token import ConsistencyToken

__all__ = ["RoutingSession", "SessionRouter", "classify"]

# A text() statement is a read only if it starts like one and has no locking clause or
# SELECT ... INTO; anything else goes to the primary. A read calling a function that writes
# (``SELECT nextval(...)``) must be sent there with `force_primary()`; on a replica opened
# read-only it fails loudly instead of writing.
_READ_TEXT = re.compile(r"\s*\(*\s*(?:select|show|explain|values|table)\b", re.I)
# EXPLAIN ANALYZE runs its statement; a ";" followed by more SQL is a second statement.
_NOT_READ_TEXT = re.compile(
    r"\bfor\s+(?:no\s+key\s+)?(?:update|share|key\s+share)\b|\binto\b|\banalyze\b|;\s*\S",
    re.I,
)


def classify(clause: object) -> str | None:
    """Why `clause` must run on the primary (``"write"``, ``"for_update"``), or None for a read."""
    if isinstance(clause, GenerativeSelect):
        return None if clause._for_update_arg is None else "for_update"
    if isinstance(clause, UpdateBase):
        return "write"
    if isinstance(clause, TextualSelect):
        clause = clause.element
    if isinstance(clause, TextClause):
        sql = clause.text
        if _READ_TEXT.match(sql) and not _NOT_READ_TEXT.search(sql):
            return None
        return "write"
    element = getattr(clause, "element", None)  # select().from_statement(text(...))
    if element is not None and element is not clause:
        return classify(element)
    return "write"


class _RouteState:
    """Where one session stands: its pinned replica, whether it wrote, its token."""

    __slots__ = (
        "avoid",
        "committed_wall",
        "forced",
        "generation",
        "issued",
        "last_replica",
        "pin_reason",
        "pinned",
        "read_only",
        "session_wrote",
        "token",
        "txn_wrote",
    )

    def __init__(self, token: ConsistencyToken | None) -> None:
        self.token = token
        self.pinned: str | None = None  # a replica's name, or PRIMARY_PIN
        self.generation = -1
        self.txn_wrote = False
        self.session_wrote = False
        self.committed_wall = 0.0
        self.issued: ConsistencyToken | None = None
        self.forced = 0
        self.read_only = 0
        self.last_replica: str | None = None  # the replica that served the last statement
        self.pin_reason = ""  # why the session is pinned to the primary
        self.avoid: str | None = None  # a replica that just failed this session

    def served_by(self) -> str | None:
        """The replica `get_bind` chose during the statement just run (None: the primary)."""
        return self.last_replica


class SessionRouter(Protocol):
    """What a `RoutingSession` asks of its router; `ReadWriteRouter` is one."""

    @property
    def pin(self) -> str:
        """``"transaction"`` or ``"session"``: how long a replica choice holds."""
        ...

    def wall_time(self) -> float:
        """Now, in wall-clock seconds (the router's clock)."""
        ...

    def replica_engines(self) -> Iterable[Engine]:
        """Every replica's engine."""
        ...

    def route(self, session: RoutingSession, mapper: Any, clause: Any) -> Engine:
        """The engine that runs `clause` (or serves `mapper`) for `session`."""
        ...

    def replica_failed(self, session: RoutingSession, name: str) -> None:
        """A read on replica `name` lost its connection; it is retried elsewhere."""
        ...

    def replica_answered(self, name: str) -> None:
        """Replica `name` served a statement."""
        ...


class RoutingSession(Session):
    """A `Session` routed by a `ReadWriteRouter`; made by `router.sessionmaker()`.

    Takes the usual `Session` arguments except ``bind``/``binds`` (the router owns the
    engines), plus ``consistency_token=``: a token from `ReadWriteRouter.token()` carried
    over from an earlier request, so this session reads that request's writes.
    """

    _sp_router: SessionRouter
    _sp: _RouteState

    def __init__(
        self,
        bind: Any = None,
        *,
        router: SessionRouter,
        consistency_token: str | None = None,
        binds: Any = None,
        **kw: Any,
    ) -> None:
        if bind is not None or binds:
            raise ConfigurationError(
                "bind", bind or binds, "nothing: a routed session takes its engines from the router"
            )
        self._sp_router = router
        token = None if consistency_token is None else ConsistencyToken.parse(consistency_token)
        if token is not None and token.wall_time is not None:
            now = router.wall_time()
            if token.wall_time > now:  # from the future (clock skew or forged): count as now
                token = ConsistencyToken.at_time(now)
        self._sp = _RouteState(token)
        super().__init__(**kw)

    def get_bind(
        self,
        mapper: Any = None,
        *,
        clause: Any = None,
        bind: Any = None,
        **kw: Any,
    ) -> Engine:
        if bind is not None:  # an explicit bind_arguments={"bind": ...} wins, as in Session
            return bind  # type: ignore[no-any-return]
        return self._sp_router.route(self, mapper, clause)

    def _execute_internal(self, statement: Any, params: Any = None, **kw: Any) -> Any:
        state = self._sp
        state.last_replica = None
        try:
            result = super()._execute_internal(statement, params, **kw)
        except sa_exc.DBAPIError as exc:
            name = state.served_by()
            # Only a lost connection (a disconnect mid-query, or a failure to connect, which
            # carries no statement) is retried; a query error on a live replica (a timeout,
            # a conflict with recovery) is the caller's, as it would be on the primary.
            lost = exc.connection_invalidated or (
                exc.statement is None
                and isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))
            )
            if name is None or not lost or self.in_nested_transaction():
                raise
            # A read on a replica failed: eject it, drop its connection from this
            # transaction and try once more elsewhere (reads only: writes never run there).
            self._sp_router.replica_failed(self, name)
            state.last_replica = None
            return super()._execute_internal(statement, params, **kw)
        name = state.served_by()
        if name is not None:
            self._sp_router.replica_answered(name)
        return result

    @property
    def router(self) -> SessionRouter:
        """The router this session was made by."""
        return self._sp_router

    @property
    def route_state(self) -> _RouteState:
        """Where this session's reads may go: its token, pin and writes so far."""
        return self._sp

    @property
    def flushing(self) -> bool:
        """True while the session flushes (the flush's statements are writes)."""
        return bool(self._flushing)

    def discard_connection(self, engine: Engine, *, invalidate: bool = True) -> None:
        """Take this transaction's connection to replica `engine` out of it and close it
        (invalidated first when the replica failed)."""
        transaction = self.get_transaction()
        if transaction is None:
            return
        connections = transaction._connections
        entry = connections.pop(engine, None)
        if entry is None:
            return
        connection = entry[0]
        connections.pop(connection, None)
        if invalidate:
            with contextlib.suppress(Exception):
                connection.invalidate()
        with contextlib.suppress(Exception):
            connection.close()  # rolls its (read-only) transaction back


@event.listens_for(RoutingSession, "before_commit")
def _before_commit(session: Session) -> None:
    # Reads on replicas have nothing to commit: end them first, so a replica that died
    # after serving a read cannot fail the commit of the primary's writes (SQLAlchemy
    # commits a transaction's connections in no set order).
    if isinstance(session, RoutingSession):
        for engine in session.router.replica_engines():
            session.discard_connection(engine, invalidate=False)


@event.listens_for(RoutingSession, "after_commit")
def _after_commit(session: Session) -> None:
    if isinstance(session, RoutingSession):
        state = session._sp
        if state.txn_wrote:
            state.session_wrote = True
            state.committed_wall = session.router.wall_time()
            state.issued = None


@event.listens_for(RoutingSession, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if isinstance(session, RoutingSession) and transaction.parent is None:
        state = session._sp
        state.txn_wrote = False
        if session.router.pin == "transaction":
            state.pinned = None
