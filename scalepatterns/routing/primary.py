"""Reaching a primary that moves: `find_primary` on new connections, and naming the server.

A libpq multi-host URL with ``target_session_attrs=read-write`` needs nothing from here:
libpq tries the hosts in order and keeps the first that accepts writes. For anything else
(a failover manager's API, a DNS name you resolve yourself), `point_at` makes every new
connection of the primary engine ask a callable where the primary is now. Either way the
router checks each new connection on the server before using it (see `ReadWriteRouter`).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from sqlalchemy import URL, Engine, event
from sqlalchemy import util as sa_util

from scalepatterns.errors import ConfigurationError

__all__ = ["FindPrimary", "check_primary_url", "point_at", "server_of"]

FindPrimary: TypeAlias = "Callable[[], str | tuple[str, int] | Awaitable[str | tuple[str, int]]]"

_await = getattr(sa_util, "await_", None) or sa_util.await_only


def _host_and_port(found: object) -> tuple[str, int | None]:
    if isinstance(found, str) and found:
        return found, None
    if (
        isinstance(found, tuple)
        and len(found) == 2
        and isinstance(found[0], str)
        and found[0]
        and isinstance(found[1], int)
        and 0 < found[1] < 65536
    ):
        return found[0], found[1]
    raise ConfigurationError(
        "find_primary", found, "a callable returning a host str or a (host, port) tuple"
    )


def check_primary_url(url: URL) -> None:
    """Refuse multi-host primary URLs that would not fail over (`ConfigurationError`).

    SQLAlchemy takes several hosts as ``host=h1:p1&host=h2:p2`` or ``host=h1,h2&port=p1,p2``;
    ``host=h1:p1,h2:p2`` reaches libpq as one host name that does not resolve. Without
    ``target_session_attrs=read-write`` (or ``primary``) libpq keeps the first host that
    answers, a standby as often as not, which the router then refuses.
    """
    hosts = url.query.get("host")
    listed = [hosts] if isinstance(hosts, str) else list(hosts or ())
    names = [name for entry in listed for name in entry.split(",")]
    if len(names) < 2:
        return
    shown = url.render_as_string(hide_password=True)
    if isinstance(hosts, str) and any(":" in name for name in names):
        raise ConfigurationError(
            "primary", shown, "hosts as host=h1:p1&host=h2:p2 or host=h1,h2&port=p1,p2"
        )
    if url.query.get("target_session_attrs") not in ("read-write", "primary"):
        raise ConfigurationError(
            "primary",
            shown,
            "a multi-host URL with target_session_attrs=read-write, so libpq keeps the "
            "host that accepts writes",
        )


def point_at(engine: Engine, find_primary: FindPrimary) -> None:
    """Make every new connection of `engine` go to the address `find_primary()` returns.

    Called once per new connection (not per statement), in the thread or task that opens
    it; an ``async`` callable is awaited when the engine is async. Any ``host`` and ``port``
    in the engine's URL are replaced; every other connection parameter stays.
    """

    def connect_to_primary(
        dialect: Any, connection_record: Any, cargs: Any, cparams: dict[str, Any]
    ) -> None:
        found: Any = find_primary()
        if inspect.isawaitable(found):
            found = _await(found)
        host, port = _host_and_port(found)
        cparams["host"] = host
        if port is not None:
            cparams["port"] = port
        elif "," in str(cparams.get("port", "")):
            del cparams["port"]  # a multi-host URL's list of ports: one host now, default port

    event.listen(engine, "do_connect", connect_to_primary)


def server_of(dbapi_connection: Any) -> str:
    """``host:port`` a DBAPI connection reached (psycopg and psycopg2), for errors and logs."""
    raw = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    info = getattr(raw, "info", None)
    host = getattr(info, "host", None)
    port = getattr(info, "port", None)
    return f"{host}:{port}" if host else "an unknown server"
