"""`ReadWriteRouter`: reads to a replica, writes to the primary, and no stale reads of one's writes.

The rules (each statement of a routed session, decided in `ReadWriteRouter._route`):

| statement | goes to |
|---|---|
| a flush; INSERT / UPDATE / DELETE, ORM or Core; ``text()`` that is not a plain SELECT | primary |
| ``SELECT ... FOR UPDATE / FOR SHARE`` | primary |
| any statement after the transaction's first write | primary |
| any read of a session that committed a write (including reloads after ``commit()``) | primary |
| a read inside `force_primary()` | primary |
| a read with a token no replica has reached (within ``token_wait``) | primary |
| a read within ``sticky_for`` seconds of a time token's write | primary |
| any other read | the session's pinned replica |
| any read when no replica is in rotation | primary (or `NoHealthyReplica`) |

On PostgreSQL every new connection of the primary engine is checked before use
(`_check_primary_connection`): a server in recovery, or one on an older timeline than the
router has seen, gets no statement (`NotPrimary`). A running server never goes back into
recovery (a standby is promoted in place; a primary becomes a standby only by restarting,
which ends every connection), so every statement on a checked connection reaches a server
out of recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Engine, event, orm
from sqlalchemy import exc as sa_exc
from sqlalchemy import util as sa_util

from scalepatterns._checks import seconds
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError, ScalePatternsError
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.routing import probe
from scalepatterns.routing.balance import BalanceOption, resolve_balancer
from scalepatterns.routing.errors import NoHealthyReplica, NotPrimary, ReadOnlyViolation
from scalepatterns.routing.events import (
    LagSampled,
    ReplicaEjected,
    ReplicaReadmitted,
    RouteDecided,
    TimelineChanged,
)
from scalepatterns.routing.health import LagSample, ReplicaHealth, ReplicaStatus, Transition
from scalepatterns.routing.primary import (
    FindPrimary,
    check_primary_url,
    point_at,
    server_of,
)
from scalepatterns.routing.session import RoutingSession, _RouteState, classify
from scalepatterns.routing.timeline import Timeline, TimelineWatch
from scalepatterns.routing.token import ConsistencyToken

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

__all__ = ["ReadWriteRouter", "ReplicaMonitor"]

_log = logging.getLogger("scalepatterns.routing")

PRIMARY = "primary"
_PRIMARY_PIN = "\x00primary"  # a session pinned to the primary for its reads (never a name)
_await = getattr(sa_util, "await_", None) or sa_util.await_only

_READ_ONLY_SQL = {
    "postgresql": ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", True),
    "sqlite": ("PRAGMA query_only = ON", False),
    "mysql": ("SET SESSION TRANSACTION READ ONLY", False),
    "mariadb": ("SET SESSION TRANSACTION READ ONLY", False),
}


def _sync_engine(engine: object, parameter: str) -> tuple[Engine, bool]:
    sync = getattr(engine, "sync_engine", None)
    if isinstance(sync, Engine):
        return sync, True
    if isinstance(engine, Engine):
        return engine, False
    raise TypeError(
        f"{parameter} must be a sqlalchemy Engine or AsyncEngine, not {type(engine).__name__}"
    )


def _same_database(a: Engine, b: Engine) -> bool:
    if a is b:
        return True
    return a.url.set(password=None) == b.url.set(password=None) and a.url.database not in (
        None,
        "",
        ":memory:",
    )


class ReadWriteRouter:
    """Routes a SQLAlchemy session's reads to replicas and its writes to the primary.

    Args:
        primary: the writable `Engine` (or `AsyncEngine`). On PostgreSQL it may reach a
            primary that moves: a libpq multi-host URL with
            ``target_session_attrs=read-write``, or `find_primary`. Every new connection is
            checked (`NotPrimary` for a standby or a former primary); set
            ``pool_pre_ping=True`` so pooled connections to a dead primary are replaced
            before use rather than failing one statement.
        replicas: replica engines, as a list (named ``replica1``, ``replica2``...) or a
            ``{name: engine}`` mapping. All engines share one dialect and are all sync or
            all async. With no replica, everything goes to the primary.
        name: a short name for events and errors.
        balance: how a session picks its replica: ``"round_robin"``, ``"random"``,
            ``"weighted"`` (with `weights`), ``"least_lag"``, or a `Balancer` / callable.
        weights: ``{replica name: weight}`` for weighted balancing.
        pin: ``"session"`` (one replica for the session's life) or ``"transaction"``
            (a new pick per transaction).
        consistency: ``"auto"`` (WAL positions on PostgreSQL, else time), ``"lsn"`` or
            ``"time"`` (for services that hide ``pg_last_wal_*``).
        sticky_for: seconds reads stick to the primary after a time token's write.
        token_wait: seconds a session with a WAL token may wait for its replica to
            replay the write before it reads from the primary instead (0: never wait).
        max_lag: seconds of measured lag that take a replica out of rotation (None: none).
        max_lag_bytes: bytes of unreplayed WAL that take a replica out (None: no bound).
        failure_threshold: consecutive connection failures that eject a replica.
        cooldown: seconds an unreachable replica stays out before it is tried again.
        no_replica: with no replica in rotation, read from the ``"primary"`` or ``"raise"``
            `NoHealthyReplica`.
        read_only_replicas: open replica connections read-only where the dialect allows
            (PostgreSQL, SQLite, MySQL), so a misrouted write fails loudly.
        find_primary: a callable naming the current primary for each new primary
            connection (PostgreSQL): a host, or a ``(host, port)`` tuple, e.g. from your
            failover manager's API or a DNS lookup. It may be ``async`` with async engines.
            The engine's other connection settings (user, database, options) still apply.
        listeners: event registry (default `default_listeners`).
        clock: time source.

    Raises:
        ConfigurationError: a replica is the primary, dialects differ, sync and async
            engines are mixed, or an option is out of range.
    """

    def __init__(
        self,
        primary: Engine | AsyncEngine,
        replicas: Sequence[Engine | AsyncEngine] | Mapping[str, Engine | AsyncEngine] = (),
        *,
        name: str = "db",
        balance: BalanceOption = "round_robin",
        weights: Mapping[str, float] | None = None,
        pin: Literal["session", "transaction"] = "session",
        consistency: Literal["auto", "lsn", "time"] = "auto",
        sticky_for: float = 5.0,
        token_wait: float = 0.0,
        max_lag: float | None = 30.0,
        max_lag_bytes: int | None = None,
        failure_threshold: int = 1,
        cooldown: float = 5.0,
        no_replica: Literal["primary", "raise"] = "primary",
        read_only_replicas: bool = True,
        find_primary: FindPrimary | None = None,
        listeners: Listeners | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._primary, self.is_async = _sync_engine(primary, "primary")
        # the engines as given, so async health checks reuse the user's AsyncEngines
        self._given: dict[str, Any] = {PRIMARY: primary}
        named = (
            dict(replicas)
            if isinstance(replicas, Mapping)
            else {f"replica{i}": e for i, e in enumerate(replicas, start=1)}
        )
        self._replicas: dict[str, Engine] = {}
        for replica_name, engine in named.items():
            sync, is_async = _sync_engine(engine, f"replicas[{replica_name!r}]")
            if is_async != self.is_async:
                raise ConfigurationError(
                    "replicas", replica_name, "engines of the same kind as primary (sync or async)"
                )
            if sync.dialect.name != self._primary.dialect.name:
                raise ConfigurationError(
                    f"replicas[{replica_name!r}]",
                    sync.dialect.name,
                    f"the primary's dialect {self._primary.dialect.name!r}",
                )
            for other_name, other in [(PRIMARY, self._primary), *self._replicas.items()]:
                if _same_database(sync, other):
                    raise ConfigurationError(
                        f"replicas[{replica_name!r}]",
                        "<engine>",
                        f"a database other than the {other_name}'s",
                    )
            self._replicas[replica_name] = sync
            self._given[replica_name] = engine
        if pin not in ("session", "transaction"):
            raise ConfigurationError("pin", pin, "'session' or 'transaction'")
        if consistency not in ("auto", "lsn", "time"):
            raise ConfigurationError("consistency", consistency, "'auto', 'lsn' or 'time'")
        postgres = self._primary.dialect.name == "postgresql"
        if consistency == "lsn" and not postgres:
            raise ConfigurationError("consistency", consistency, "'lsn' only on PostgreSQL")
        seconds("sticky_for", sticky_for)
        seconds("token_wait", token_wait)  # unbounded, a reader could wait forever
        if no_replica not in ("primary", "raise"):
            raise ConfigurationError("no_replica", no_replica, "'primary' or 'raise'")
        self.name = name
        self.pin = pin
        self.wal = postgres and consistency != "time"
        self.consistency = consistency
        self.sticky_for = float(sticky_for)
        self.token_wait = float(token_wait)
        self.no_replica = no_replica
        self._balancer = resolve_balancer(balance)
        self._clock = clock
        self._listeners = listeners if listeners is not None else default_listeners
        self.health = ReplicaHealth(
            list(self._replicas),
            weights=weights,
            max_lag_seconds=max_lag,
            max_lag_bytes=max_lag_bytes,
            failure_threshold=failure_threshold,
            cooldown=cooldown,
            clock=clock,
        )
        self.timelines = TimelineWatch()
        if postgres:
            self._guard_primary(find_primary)
        elif find_primary is not None:
            raise ConfigurationError("find_primary", find_primary, "None except on PostgreSQL")
        self._force_var: ContextVar[bool] = ContextVar(
            f"sp_force_primary_{id(self)}", default=False
        )
        self._read_only_var: ContextVar[bool] = ContextVar(
            f"sp_read_only_{id(self)}", default=False
        )
        if read_only_replicas:
            setting = _READ_ONLY_SQL.get(self._primary.dialect.name)
            if setting is not None:
                set_read_only = _read_only_on_connect(*setting)
                for engine in self._replicas.values():
                    # once per engine, however many routers are built over it
                    if not event.contains(engine, "connect", set_read_only):
                        event.listen(engine, "connect", set_read_only)

    # -- engines and sessions ---------------------------------------------------------------

    @property
    def primary(self) -> Engine:
        """The primary's (sync) `Engine`."""
        return self._primary

    @property
    def replicas(self) -> dict[str, Engine]:
        """The replicas' (sync) engines by name."""
        return dict(self._replicas)

    def engine_name(self, engine: Engine) -> str:
        """``"primary"`` or the replica name of a (sync) engine of this router."""
        if engine is self._primary:
            return PRIMARY
        for replica_name, replica in self._replicas.items():
            if replica is engine:
                return replica_name
        raise KeyError("not an engine of this router")

    def sessionmaker(self, **kw: Any) -> orm.sessionmaker[RoutingSession]:
        """A `sessionmaker` of routed sync sessions (takes `sessionmaker`'s options)."""
        if self.is_async:
            raise ConfigurationError(
                "sessionmaker", "async engines", "sync engines; use async_sessionmaker()"
            )
        return orm.sessionmaker(class_=RoutingSession, router=self, **kw)

    def async_sessionmaker(self, **kw: Any) -> async_sessionmaker[AsyncSession]:
        """An `async_sessionmaker` of `AsyncSession`s whose sync session is routed."""
        if not self.is_async:
            raise ConfigurationError(
                "async_sessionmaker", "sync engines", "AsyncEngines; use sessionmaker()"
            )
        from sqlalchemy.ext.asyncio import async_sessionmaker

        return async_sessionmaker(sync_session_class=RoutingSession, router=self, **kw)

    # -- scopes and tokens ---------------------------------------------------------------------

    def _state(self, session: object) -> _RouteState:
        sync = getattr(session, "sync_session", session)
        if not isinstance(sync, RoutingSession) or sync.router is not self:
            raise TypeError(
                "expected a session made by this router's sessionmaker() or "
                f"async_sessionmaker(), not {type(session).__name__}"
            )
        return sync._sp

    @contextlib.contextmanager
    def _scope(self, var: ContextVar[bool], session: object | None, slot: str) -> Iterator[None]:
        """Set a context-wide flag (no session) or count a session's nesting of `slot`."""
        if session is None:
            reset = var.set(True)
            try:
                yield
            finally:
                var.reset(reset)
            return
        state = self._state(session)
        setattr(state, slot, getattr(state, slot) + 1)
        try:
            yield
        finally:
            setattr(state, slot, getattr(state, slot) - 1)

    def force_primary(
        self, session: object | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """Send every statement to the primary: of `session`, or of any session in the block.

        Without a session the scope follows the current context (thread or asyncio task).
        """
        return self._scope(self._force_var, session, "forced")

    def read_only(self, session: object | None = None) -> contextlib.AbstractContextManager[None]:
        """Refuse writes (`ReadOnlyViolation`) in `session`, or in any session in the block."""
        return self._scope(self._read_only_var, session, "read_only")

    def token(self, session: object) -> str | None:
        """A consistency token covering what `session` committed (and the token it was given).

        On PostgreSQL it records ``pg_current_wal_insert_lsn()`` read on the primary now, after
        the commit, with the primary's timeline; elsewhere the commit's wall time. None if
        there is nothing to be consistent with. Async sessions: ``await router.atoken(session)``.

        Raises:
            ScalePatternsError: the session has uncommitted writes (commit first).
        """
        state = self._state(session)
        if state.txn_wrote:
            raise ScalePatternsError(
                "the session has uncommitted writes: commit before asking for a token"
            )
        token = state.token
        if state.session_wrote:
            if state.issued is None:
                if self.wal:
                    try:
                        with self._primary.connect() as conn:
                            where = probe.position(conn)
                            if where.in_recovery or where.lsn is None:
                                server = server_of(conn.connection.dbapi_connection)
                                raise NotPrimary(self.name, server, "in_recovery")
                        if where.timeline is not None:
                            self._saw(where.timeline, primary=True)
                        state.issued = ConsistencyToken.at_lsn(where.lsn, where.timeline)
                    except probe.WalFunctionsUnavailable as exc:
                        self._wal_unavailable(exc)
                if state.issued is None:
                    state.issued = ConsistencyToken.at_time(state.committed_wall)
            token = state.issued.newer(token)
        return None if token is None else str(token)

    async def atoken(self, session: AsyncSession) -> str | None:
        """`token` for an `AsyncSession`."""
        return await session.run_sync(self.token)

    # -- routing ---------------------------------------------------------------------------

    def _to_primary(self, reason: str) -> Engine:
        if self._listeners.active:
            self._listeners.emit(RouteDecided(self.name, PRIMARY, reason))
        return self._primary

    def route(self, session: RoutingSession, mapper: object, clause: object) -> Engine:
        """The engine that runs `clause` (or serves `mapper`) for `session`: what a
        `RoutingSession`'s ``get_bind`` asks."""
        state = session.route_state
        if session.flushing:
            reason: str | None = "flush"
        elif clause is not None:
            reason = classify(clause)
        elif mapper is not None:
            reason = "write"  # bulk operations ask for a connection by mapper alone
        else:
            # session.connection(): whatever runs on it is out of sight, so it counts as a
            # write (later reads of the transaction, and the token, then see its effects);
            # a read-only session may still use it on the primary.
            if state.read_only or self._read_only_var.get():
                return self._to_primary("connection")
            reason = "connection"
        if reason is not None:
            if state.read_only or self._read_only_var.get():
                what = reason if reason == "flush" or clause is None else type(clause).__name__
                raise ReadOnlyViolation(self.name, what)
            state.txn_wrote = True
            return self._to_primary(reason)
        if state.txn_wrote or state.session_wrote:
            return self._to_primary("after_write")
        if state.forced or self._force_var.get():
            return self._to_primary("forced")
        token = state.token
        if token is not None and token.wall_time is not None:
            if self._clock.time() < token.wall_time + self.sticky_for:
                return self._to_primary("sticky")
            state.token = None  # expired: later reads skip this check
        pinned = state.pinned
        # A session pinned to the primary stays there (its reads must not go back in time);
        # one pinned to a replica re-picks only if that replica may have left the rotation.
        if pinned is None or (
            pinned != _PRIMARY_PIN
            and state.generation != self.health.generation
            and not self.health.is_available(pinned)
        ):
            pinned = self._pin(state)
        if pinned == _PRIMARY_PIN:
            return self._to_primary(state.pin_reason)
        state.last_replica = pinned
        if self._listeners.active:
            self._listeners.emit(RouteDecided(self.name, pinned, "read"))
        return self._replicas[pinned]

    def _pin(self, state: _RouteState) -> str:
        """Choose the replica (or the primary) this session's reads stick to."""
        health = self.health
        state.generation = health.generation
        token = state.token
        if token is None and state.avoid is None and health.steady and health.in_order:
            # the healthy steady state: every replica is a candidate
            chosen_name = self._balancer.choose(health.in_order).name
            state.pinned = chosen_name
            return chosen_name
        min_lsn = None if token is None else token.lsn
        if min_lsn is not None and not self.wal:
            return self._pin_primary(state, "token")  # a WAL token we cannot check here
        avoid, state.avoid = state.avoid, None
        # After a failure the retry goes to another replica, or to the primary: never back
        # to the one that just failed, even if it is still in rotation.
        candidates = [c for c in health.candidates() if c.name != avoid]
        if not candidates:
            if self.no_replica == "raise":
                raise NoHealthyReplica(self.name)
            return self._pin_primary(state, "no_replica")
        if token is not None and min_lsn is not None:
            # Positions compare only on one WAL history, and only the newest one counts: a
            # token from before a promotion (or from another cluster) reads from the primary.
            current = self._current_timeline()
            if current is None or token.timeline != current:
                return self._pin_primary(state, "token")
            caught_up = {c.name for c in health.candidates(min_lsn, current)}
            ready = [c for c in candidates if c.name in caught_up]
            if not ready:
                chosen = self._balancer.choose(candidates)
                if self._wait_for_lsn(chosen.name, min_lsn, current):
                    ready = [chosen]
            if not ready:
                return self._pin_primary(state, "token")
            candidates = ready
        chosen_name = self._balancer.choose(candidates).name
        state.pinned = chosen_name
        return chosen_name

    def _pin_primary(self, state: _RouteState, reason: str) -> str:
        state.pinned = _PRIMARY_PIN
        state.pin_reason = reason
        return _PRIMARY_PIN

    def _wait_for_lsn(self, name: str, lsn: int, timeline: Timeline) -> bool:
        """Whether replica `name` replays `lsn` of `timeline` within `token_wait` (asks it)."""
        engine = self._replicas[name]
        deadline = self._clock.monotonic() + self.token_wait
        while True:
            try:
                with engine.connect() as conn:
                    where = probe.position(conn)
            except probe.WalFunctionsUnavailable as exc:
                self._wal_unavailable(exc)
                return False
            except sa_exc.DBAPIError:
                self._apply(self.health.record_failure(name))
                return False
            if where.lsn is not None:
                self.health.note_position(name, where.lsn, where.timeline)
                if where.timeline is not None:
                    self._saw(where.timeline, primary=False)
                if where.timeline == timeline and where.lsn >= lsn:
                    return True
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return False
            step = min(0.01, remaining)
            if self.is_async:
                _await(self._clock.asleep(step))
            else:
                self._clock.sleep(step)

    # -- the primary: its connections and its timeline -------------------------------------

    def _guard_primary(self, find_primary: FindPrimary | None) -> None:
        check_primary_url(self._primary.url)
        if find_primary is not None:
            if not callable(find_primary):
                raise ConfigurationError(
                    "find_primary", find_primary, "a callable returning a host or (host, port)"
                )
            point_at(self._primary, find_primary)
        event.listen(self._primary, "connect", self._check_primary_connection)

    def _check_primary_connection(self, dbapi_connection: Any, connection_record: Any) -> None:
        """The primary engine's ``connect`` listener: refuse a server that must not take writes.

        One round trip per new connection. A standby (in recovery) or a server on an older
        timeline than one already seen gets `NotPrimary`, and SQLAlchemy closes the
        connection before anything else is sent on it.
        """
        dbapi = self._primary.dialect.loaded_dbapi
        timeline = None
        if self.wal:
            try:
                where = probe.raw_position(dbapi_connection)
            except (dbapi.ProgrammingError, dbapi.NotSupportedError) as exc:
                self._wal_unavailable(exc)
                standby = probe.in_recovery(dbapi_connection)
            else:
                standby, timeline = where.in_recovery, where.timeline
        else:
            standby = probe.in_recovery(dbapi_connection)
        if standby:
            raise NotPrimary(self.name, server_of(dbapi_connection), "in_recovery")
        if timeline is not None:
            if self.timelines.behind(timeline):
                raise NotPrimary(
                    self.name,
                    server_of(dbapi_connection),
                    "behind",
                    f"timeline {timeline.timeline_id}, not {self.timelines.current}",
                )
            self._saw(timeline, primary=True)

    def _saw(self, timeline: Timeline, *, primary: bool) -> None:
        previous = self.timelines.advance(timeline, primary=primary)
        if previous is None:
            return
        _log.warning(
            "router %r: WAL history %s replaces %s (a standby was promoted, or the primary "
            "engine reaches another cluster); tokens taken before read from the primary",
            self.name,
            timeline,
            previous,
        )
        if self._listeners.active:
            self._listeners.emit(TimelineChanged(self.name, previous, timeline))

    def _current_timeline(self) -> Timeline | None:
        """The newest WAL history seen; asks the primary if none has been seen yet."""
        current = self.timelines.current
        if current is not None:
            return current
        try:
            with self._primary.connect() as conn:
                where = probe.position(conn)
        except probe.WalFunctionsUnavailable as exc:
            self._wal_unavailable(exc)
            return None
        except (sa_exc.DBAPIError, NotPrimary):
            return None
        if where.timeline is not None and not where.in_recovery:
            self._saw(where.timeline, primary=True)
        return self.timelines.current

    def replica_failed(self, session: RoutingSession, name: str) -> None:
        """A read of `session` on replica `name` lost its connection: count the failure
        and drop the connection, so the retry goes elsewhere."""
        self._apply(self.health.record_failure(name))
        session.discard_connection(self._replicas[name])
        state = session.route_state
        state.pinned = None
        state.avoid = name  # the re-pick avoids it even if it is still in rotation
        if self._listeners.active:
            self._listeners.emit(RouteDecided(self.name, name, "failed"))

    def replica_answered(self, name: str) -> None:
        """Replica `name` served a statement (news for its health only after failures)."""
        if self.health.troubled(name):
            self._apply(self.health.record_success(name))

    def wall_time(self) -> float:
        """Now, in wall-clock seconds (this router's clock)."""
        return self._clock.time()

    def replica_engines(self) -> list[Engine]:
        """Every replica's engine."""
        return list(self._replicas.values())

    def _apply(self, transitions: list[Transition]) -> None:
        if not (transitions and self._listeners.active):
            return
        for t in transitions:
            if t.kind == "ejected":
                self._listeners.emit(ReplicaEjected(self.name, t.replica, t.reason))
            else:
                self._listeners.emit(ReplicaReadmitted(self.name, t.replica))

    def _wal_unavailable(self, exc: Exception) -> None:
        """The server hides ``pg_*wal*``: with ``consistency="auto"``, switch to time tokens.

        WAL tokens already handed out then send their holders' reads to the primary (they
        can no longer be checked); new tokens are time tokens. With ``"lsn"`` the router
        keeps trying, and token holders read from the primary meanwhile.
        """
        if self.consistency == "auto" and self.wal:
            self.wal = False
            _log.warning(
                "router %r: the server refused the WAL position functions (%s); "
                "using time-based consistency (sticky_for=%ss) from now on",
                self.name,
                exc,
                self.sticky_for,
            )

    # -- health ----------------------------------------------------------------------------

    def status(self) -> list[ReplicaStatus]:
        """A snapshot of every replica's health."""
        return self.health.status()

    def _record(self, name: str, sample: LagSample | None) -> None:
        if sample is None:
            self._apply(self.health.record_failure(name))
            return
        self._apply(self.health.record_sample(name, sample))
        if sample.timeline is not None:
            self._saw(sample.timeline, primary=False)
        if self._listeners.active:
            self._listeners.emit(LagSampled(self.name, name, sample.lag_bytes, sample.lag_seconds))

    def _after_probe_error(self, exc: BaseException) -> LagSample | None:
        """What a failed measurement means: alive with unknown lag (the WAL functions were
        refused), or None (the server could not be reached)."""
        if isinstance(exc, probe.WalFunctionsUnavailable):
            self._wal_unavailable(exc)
            return LagSample()
        return None

    def _primary_position(self, where: probe.ServerPosition) -> int | None:
        """The primary's insert position for lag (None if the server is not a primary)."""
        if where.in_recovery:
            return None
        if where.timeline is not None:
            self._saw(where.timeline, primary=True)
        return where.lsn

    def check(self) -> list[ReplicaStatus]:
        """Measure every replica now (lag, or liveness), update the rotation, return it."""
        if self.is_async:
            raise ConfigurationError("check", "async engines", "sync engines; use acheck()")
        primary_lsn = None
        if self.wal and self._replicas:
            try:
                with self._primary.connect() as conn:
                    primary_lsn = self._primary_position(probe.position(conn))
            except (probe.WalFunctionsUnavailable, sa_exc.DBAPIError, NotPrimary) as exc:
                self._after_probe_error(exc)  # the primary's position is unknown this round

        def measure(engine: Engine) -> LagSample | None:
            try:
                with engine.connect() as conn:
                    return probe.measure_replica(conn, primary_lsn, self.wal)
            except (probe.WalFunctionsUnavailable, sa_exc.DBAPIError) as exc:
                return self._after_probe_error(exc)

        # All at once, each recorded as it answers: a replica that hangs (until the
        # driver's timeouts) delays neither the others' measurements nor their verdicts.
        replicas = self._replicas
        if len(replicas) <= 1:
            for name, engine in replicas.items():
                self._record(name, measure(engine))
        else:
            with ThreadPoolExecutor(len(replicas), thread_name_prefix="sp-probe") as pool:
                futures = {pool.submit(measure, engine): name for name, engine in replicas.items()}
                for future in as_completed(futures):
                    self._record(futures[future], future.result())
        return self.status()

    async def acheck(self) -> list[ReplicaStatus]:
        """`check` for a router over async engines."""
        if not self.is_async:
            raise ConfigurationError("acheck", "sync engines", "AsyncEngines; use check()")
        primary_lsn = None
        if self.wal and self._replicas:
            try:
                async with self._given[PRIMARY].connect() as aconn:
                    primary_lsn = self._primary_position(await aconn.run_sync(probe.position))
            except (probe.WalFunctionsUnavailable, sa_exc.DBAPIError, NotPrimary) as exc:
                self._after_probe_error(exc)  # the primary's position is unknown this round

        async def measure(name: str) -> None:
            sample: LagSample | None
            try:
                async with self._given[name].connect() as aconn:
                    sample = await aconn.run_sync(probe.measure_replica, primary_lsn, self.wal)
            except (probe.WalFunctionsUnavailable, sa_exc.DBAPIError) as exc:
                sample = self._after_probe_error(exc)
            self._record(name, sample)

        await asyncio.gather(*(measure(name) for name in self._replicas))  # as in `check`
        return self.status()

    def start_monitor(self, interval: float = 1.0) -> ReplicaMonitor:
        """Run `check()` every `interval` seconds in a daemon thread (sync engines)."""
        return ReplicaMonitor(self, interval).start()

    async def amonitor(self, interval: float = 1.0) -> None:
        """Run `acheck()` every `interval` seconds until cancelled (for an asyncio task)."""
        if not (interval > 0):
            raise ConfigurationError("interval", interval, "seconds > 0")
        while True:
            await self.acheck()
            await self._clock.asleep(interval)

    def __repr__(self) -> str:
        return (
            f"ReadWriteRouter({self.name!r}, dialect={self._primary.dialect.name!r}, "
            f"replicas={list(self._replicas)}, in_rotation={self.health.in_rotation()})"
        )


class ReplicaMonitor:
    """A daemon thread measuring a router's replicas every `interval` seconds."""

    def __init__(self, router: ReadWriteRouter, interval: float = 1.0) -> None:
        if not (isinstance(interval, (int, float)) and interval > 0):
            raise ConfigurationError("interval", interval, "seconds > 0")
        self.router = router
        self.interval = float(interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ReplicaMonitor:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"sp-replica-monitor-{self.router.name}", daemon=True
            )
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a probe error must never kill the monitor
                self.router.check()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> ReplicaMonitor:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@functools.cache
def _read_only_on_connect(sql: str, commit: bool) -> Any:
    def set_read_only(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()
        if commit:
            dbapi_connection.commit()

    return set_read_only
