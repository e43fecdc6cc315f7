"""What the router asks the servers: WAL positions, timelines, replica lag, recovery, liveness.

Thin I/O on a SQLAlchemy `Connection`; the decisions live in `health.py` and `timeline.py`.
Async engines run the same functions through ``AsyncConnection.run_sync``, and the primary's
connection check runs them on the raw DBAPI connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy import exc as sa_exc

from scalepatterns.routing.health import LagSample
from scalepatterns.routing.timeline import Timeline
from scalepatterns.routing.token import parse_lsn

__all__ = [
    "ServerPosition",
    "WalFunctionsUnavailable",
    "in_recovery",
    "measure_replica",
    "position",
]


class WalFunctionsUnavailable(Exception):
    """The server refused the ``pg_*wal*`` or ``pg_control_*`` functions (a managed service
    hiding them, or a role without the privilege); the server itself answered."""


# what PostgreSQL answers when a function is missing or not granted
_REFUSED = (sa_exc.ProgrammingError, sa_exc.NotSupportedError)

# One round trip for everything the router wants to know about a server.
# - The position is the insert position on a primary, not pg_current_wal_lsn() (the write
#   position): with synchronous_commit=off a commit returns while its record may still sit
#   in WAL buffers, past the write position, and a token taken from the latter would miss
#   it. On a standby it is the replay position.
# - The timeline of a primary is exact (its current WAL file's name). A standby has no
#   function for the timeline it replays; the greatest of the timeline it receives (visible
#   to superusers and pg_read_all_stats only, else NULL) and those of its last restartpoint
#   and minimum recovery point never exceeds it. Right after a promotion it may name the
#   old timeline for a while, which only sends token holders to the primary meanwhile.
_POSITION_SQL = """\
SELECT pg_is_in_recovery(),
  CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
       ELSE pg_current_wal_insert_lsn() END::text,
  CASE WHEN pg_is_in_recovery() THEN NULL
       ELSE pg_walfile_name(pg_current_wal_insert_lsn()) END,
  CASE WHEN pg_is_in_recovery() THEN GREATEST(
         (SELECT received_tli FROM pg_stat_wal_receiver),
         (SELECT timeline_id FROM pg_control_checkpoint()),
         (SELECT min_recovery_end_timeline FROM pg_control_recovery())) END,
  (SELECT system_identifier FROM pg_control_system())::text,
  EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())"""
_POSITION = text(_POSITION_SQL)
_IN_RECOVERY = "SELECT pg_is_in_recovery()"
_PING = text("SELECT 1")


@dataclass(frozen=True, slots=True)
class ServerPosition:
    """Where one server stands.

    Attributes:
        in_recovery: a standby (``pg_is_in_recovery()``).
        lsn: the replay position of a standby, the insert position of a primary (None on a
            standby that has replayed nothing yet).
        timeline: the WAL history `lsn` belongs to (on a standby, the latest it is known
            to be on).
        replay_age: seconds since the last transaction a standby replayed committed.
    """

    in_recovery: bool
    lsn: int | None
    timeline: Timeline | None
    replay_age: float | None = None


def _refused(conn: Connection, exc: Exception) -> WalFunctionsUnavailable:
    conn.rollback()
    conn.execute(_PING).scalar_one()  # the server is alive: only the function was refused
    return WalFunctionsUnavailable(str(exc).splitlines()[0])


def _position_of(row: Any) -> ServerPosition:
    standby, lsn, walfile, standby_tli, system_id, replay_age = row
    timeline_id = standby_tli if standby else int(walfile[:8], 16)
    timeline = None
    if timeline_id and system_id is not None:
        timeline = Timeline(int(system_id), int(timeline_id))
    return ServerPosition(
        in_recovery=bool(standby),
        lsn=None if lsn is None else parse_lsn(lsn),
        timeline=timeline,
        replay_age=None if replay_age is None else float(replay_age),
    )


def position(conn: Connection) -> ServerPosition:
    """The server's recovery state, WAL position and timeline, in one round trip.

    Read on the primary after a commit, the position is at or past the commit record, even
    with ``synchronous_commit=off``.

    Raises:
        WalFunctionsUnavailable: the server refused one of the functions.
    """
    try:
        row = conn.execute(_POSITION).one()
    except _REFUSED as exc:
        raise _refused(conn, exc) from exc
    return _position_of(row)


def raw_position(dbapi_connection: Any) -> ServerPosition:
    """`position` on a DBAPI connection (for the primary's connection check); rolls back after."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(_POSITION_SQL)
        return _position_of(cursor.fetchone())
    finally:
        cursor.close()
        dbapi_connection.rollback()


def in_recovery(dbapi_connection: Any) -> bool:
    """``pg_is_in_recovery()`` on a DBAPI connection; rolls back after."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(_IN_RECOVERY)
        row = cursor.fetchone()
        return bool(row[0])
    finally:
        cursor.close()
        dbapi_connection.rollback()


def measure_replica(replica: Connection, primary_lsn: int | None, wal: bool) -> LagSample:
    """Lag of one replica, measured on the server.

    Bytes are the primary's ``pg_current_wal_insert_lsn()`` minus the replica's
    ``pg_last_wal_replay_lsn()``; seconds are ``now() - pg_last_xact_replay_timestamp()``
    while WAL is pending, and 0 when the replica has replayed everything (an idle primary is
    not lag). A server that is not in recovery (a promoted standby listed as a replica) has
    everything it holds: no lag, its position is its insert position. Without WAL positions
    (SQLite...) this is only a liveness check.
    """
    if not wal:
        replica.execute(_PING).scalar_one()
        return LagSample()
    where = position(replica)
    standby = where.in_recovery
    if primary_lsn is None or where.lsn is None:
        return LagSample(replay_lsn=where.lsn, timeline=where.timeline, in_recovery=standby)
    if not standby:
        return LagSample(0, 0.0, where.lsn, where.timeline, in_recovery=False)
    lag_bytes = max(0, primary_lsn - where.lsn)
    seconds = 0.0 if lag_bytes == 0 or where.replay_age is None else max(0.0, where.replay_age)
    return LagSample(lag_bytes, seconds, where.lsn, where.timeline, in_recovery=True)
