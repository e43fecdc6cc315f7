"""``scalepatterns replicas check``: each replica's lag and whether it serves reads."""

from __future__ import annotations

from typing import Any

import click

from scalepatterns.cli import exits
from scalepatterns.cli.output import emit, json_option, table
from scalepatterns.cli.settings import POSTGRES_ENV, engine, named_urls

__all__ = ["replicas"]


@click.group()
def replicas() -> None:
    """Read replicas (PostgreSQL)."""


@replicas.command()
@click.option(
    "--primary",
    "primary_url",
    envvar=POSTGRES_ENV,
    show_envvar=True,
    required=True,
    metavar="URL",
    help="The primary (a SQLAlchemy URL; postgresql:// uses psycopg 3).",
)
@click.option(
    "--replica",
    "replica_urls",
    multiple=True,
    required=True,
    callback=named_urls,
    metavar="NAME=URL",
    help="A replica (repeatable).",
)
@click.option(
    "--max-lag", type=float, default=30.0, show_default=True, help="Seconds of lag that eject."
)
@click.option("--max-lag-bytes", type=int, help="Bytes of unreplayed WAL that eject.")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Connect timeout.")
@json_option
def check(
    *,
    primary_url: str,
    replica_urls: dict[str, str],
    max_lag: float,
    max_lag_bytes: int | None,
    timeout: float,
    as_json: bool,
) -> int:
    """Measure every replica now, as `ReadWriteRouter.check()` does.

    Exits 1 when a replica is out of rotation (lagging or unreachable) or is not in
    recovery at all (a primary listed as a replica: it takes no replication, and reads
    from it may miss writes).
    """
    from scalepatterns.routing import ReadWriteRouter

    primary = engine(primary_url, "--primary", connect_timeout=timeout)
    engines = {
        name: engine(url, f"--replica {name}", connect_timeout=timeout)
        for name, url in replica_urls.items()
    }
    try:
        router = ReadWriteRouter(
            primary, engines, name="cli", max_lag=max_lag, max_lag_bytes=max_lag_bytes
        )
        statuses = router.check()
    finally:
        for each in (primary, *engines.values()):
            each.dispose()
    rows: list[dict[str, Any]] = []
    for s in statuses:
        warning = None
        if s.in_recovery is False:
            warning = "not in recovery: this server is a primary, not a replica"
        elif not s.in_rotation:
            warning = f"out of rotation ({s.ejected_for})"
        rows.append(
            {
                "name": s.name,
                "in_rotation": s.in_rotation,
                "ejected_for": s.ejected_for,
                "in_recovery": s.in_recovery,
                "lag_seconds": s.lag_seconds,
                "lag_bytes": s.lag_bytes,
                "warning": warning,
            }
        )

    def human() -> str:
        return table(
            ["replica", "in rotation", "lag s", "lag bytes", "in recovery", "warning"],
            [
                [
                    r["name"],
                    r["in_rotation"],
                    r["lag_seconds"],
                    r["lag_bytes"],
                    r["in_recovery"],
                    r["warning"] or "",
                ]
                for r in rows
            ],
        )

    emit(as_json, {"replicas": rows}, human)
    return exits.FOUND if any(r["warning"] for r in rows) else exits.OK
