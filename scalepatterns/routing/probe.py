"""What the router asks the servers: WAL positions and replica lag (PostgreSQL), liveness.

Thin I/O on a SQLAlchemy `Connection`; the decisions live in `health.py`. Async engines run
the same functions through ``AsyncConnection.run_sync``.
"""

from __future__ import annotations

from sqlalchemy import Connection, text
from sqlalchemy import exc as sa_exc

from scalepatterns.routing.health import LagSample
from scalepatterns.routing.token import format_lsn, parse_lsn

__all__ = ["WalFunctionsUnavailable", "current_wal_lsn", "measure_replica", "replay_lsn"]


class WalFunctionsUnavailable(Exception):
    """The server refused the ``pg_*wal*`` functions (a managed service hiding them, or a
    role without the privilege); the replica itself answered."""


# what PostgreSQL answers when a function is missing or not granted
_REFUSED = (sa_exc.ProgrammingError, sa_exc.NotSupportedError)

# The insert position, not pg_current_wal_lsn() (the write position): with
# synchronous_commit=off a commit returns while its record may still sit in WAL buffers,
# past the write position, and a token taken from the latter would miss the commit.
_CURRENT_LSN = text("SELECT pg_current_wal_insert_lsn()::text")
_REPLAY_LSN = text("SELECT pg_last_wal_replay_lsn()::text")
_REPLICA_LAG = text(
    "SELECT pg_last_wal_replay_lsn()::text,"
    " pg_wal_lsn_diff(CAST(:primary AS pg_lsn), pg_last_wal_replay_lsn()),"
    " EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())"
)
_PING = text("SELECT 1")


def _refused(conn: Connection, exc: Exception) -> WalFunctionsUnavailable:
    conn.rollback()
    conn.execute(_PING).scalar_one()  # the server is alive: only the function was refused
    return WalFunctionsUnavailable(str(exc).splitlines()[0])


def current_wal_lsn(primary: Connection) -> int:
    """The primary's current WAL insert position (read it after a commit has completed).

    ``pg_current_wal_insert_lsn()`` is at or past every committed transaction's commit
    record, even with ``synchronous_commit=off``.

    Raises:
        WalFunctionsUnavailable: the server refused the function.
    """
    try:
        value = primary.execute(_CURRENT_LSN).scalar_one()
    except _REFUSED as exc:
        raise _refused(primary, exc) from exc
    return parse_lsn(value)


def replay_lsn(replica: Connection) -> int | None:
    """How far a streaming replica has replayed WAL (None if it is not a standby).

    Raises:
        WalFunctionsUnavailable: the server refused the function.
    """
    try:
        value = replica.execute(_REPLAY_LSN).scalar_one_or_none()
    except _REFUSED as exc:
        raise _refused(replica, exc) from exc
    return None if value is None else parse_lsn(value)


def measure_replica(replica: Connection, primary_lsn: int | None, wal: bool) -> LagSample:
    """Lag of one replica, measured on the server.

    Bytes are ``pg_wal_lsn_diff(primary's pg_current_wal_insert_lsn(), pg_last_wal_replay_lsn())``;
    seconds are ``now() - pg_last_xact_replay_timestamp()`` while WAL is pending, and 0 when
    the replica has replayed everything (an idle primary is not lag). Without WAL positions
    (SQLite...) this is only a liveness check.
    """
    if not wal:
        replica.execute(_PING).scalar_one()
        return LagSample()
    primary_text = "0/0" if primary_lsn is None else format_lsn(primary_lsn)
    try:
        row = replica.execute(_REPLICA_LAG, {"primary": primary_text}).one()
    except _REFUSED as exc:
        raise _refused(replica, exc) from exc
    replayed = None if row[0] is None else parse_lsn(row[0])
    if primary_lsn is None or replayed is None or row[1] is None:
        return LagSample(replay_lsn=replayed)
    lag_bytes = max(0, int(row[1]))
    seconds = 0.0 if lag_bytes == 0 or row[2] is None else max(0.0, float(row[2]))
    return LagSample(lag_bytes=lag_bytes, lag_seconds=seconds, replay_lsn=replayed)
