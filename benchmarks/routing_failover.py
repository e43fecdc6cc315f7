"""Read/write router across a promotion: time from the primary's death to the first write.

A throw-away two-node PostgreSQL cluster (tests/support/postgres_cluster.py) on loopback.
The router is set up as docs/scaling-out.md says: a multi-host primary URL with
``target_session_attrs=read-write`` and ``pool_pre_ping=True``, both nodes as replicas. A
writer thread commits one row through the router every 10 ms. Each run SIGKILLs the
primary's process group and at once runs ``pg_ctl promote -w`` on the standby, as a
failover manager would; the figure is the time from the kill to the writer's first commit
after it. The former primary is then rebuilt as a standby, and the next run fails over
the other way. Median of 5 runs; skipped under ``--quick`` (it starts its own cluster).
"""

from __future__ import annotations

import statistics
import threading
import time

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from benchmarks.harness import Bench
from scalepatterns.routing import NotPrimary, ReadWriteRouter

TITLE = "router write after the primary is killed and the standby promoted (throw-away cluster)"
RUNS = 5
RETRY_EVERY = 0.01


class Base(DeclarativeBase):
    pass


class Tick(Base):
    __tablename__ = "sp_bench_failover"
    id: Mapped[int] = mapped_column(primary_key=True)


class Writer(threading.Thread):
    """Commits a row through the router every `RETRY_EVERY` seconds; notes when each commit
    returned and the port of the server that took it."""

    def __init__(self, router: ReadWriteRouter) -> None:
        super().__init__(name="sp-bench-writer", daemon=True)
        self.sessions = router.sessionmaker()
        self.commits: list[tuple[float, int]] = []
        self.failures = 0
        self.stop = threading.Event()
        self.next_id = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.next_id += 1
            try:
                with self.sessions() as session:
                    session.add(Tick(id=self.next_id))
                    port = session.connection().connection.dbapi_connection.info.port
                    session.commit()
                self.commits.append((time.perf_counter(), port))
            except (sa_exc.DBAPIError, NotPrimary):
                self.failures += 1
            self.stop.wait(RETRY_EVERY)

    def first_commit_after(self, moment: float, port: int, timeout: float = 60.0) -> float:
        """When the first commit on the server at `port` returned after `moment`.

        Counting only that server leaves out a commit the dying primary acknowledged just
        after the kill was sent.
        """
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            later = [t for t, served_by in self.commits if t > moment and served_by == port]
            if later:
                return later[0]
            time.sleep(0.005)
        raise TimeoutError("no write landed on the promoted server")


def _one_failover(cluster: object) -> dict[str, float]:
    from tests.support.postgres_cluster import PostgresCluster

    assert isinstance(cluster, PostgresCluster)
    connect = {"connect_timeout": 2}
    primary = sa.create_engine(cluster.multihost_url(), connect_args=connect, pool_pre_ping=True)
    nodes = {
        node: sa.create_engine(cluster.url(port), connect_args=connect)
        for node, port in cluster.ports.items()
    }
    router = ReadWriteRouter(primary, nodes)
    Base.metadata.create_all(primary)
    with primary.begin() as conn:
        conn.execute(sa.delete(Tick))
    cluster.wait_replayed()  # the table must survive the failover (replication is async)
    writer = Writer(router)
    writer.start()
    try:
        writer.first_commit_after(time.perf_counter(), cluster.primary_port)  # warm
        failures_before = writer.failures
        killed = time.perf_counter()
        cluster.kill_primary()
        cluster.promote_replica()
        promoted = time.perf_counter()
        written = writer.first_commit_after(killed, cluster.primary_port)  # the promoted one
    finally:
        writer.stop.set()
        writer.join(timeout=10)
        for engine in [primary, *nodes.values()]:
            engine.dispose()
    cluster.rejoin_former_primary()
    return {
        "kill_to_write": written - killed,
        "kill_to_promoted": promoted - killed,
        "failed_attempts": float(writer.failures - failures_before),
    }


def run(bench: Bench) -> None:
    from tests.support.postgres_cluster import PostgresCluster, pg_bindir

    if bench.quick:
        bench.record(TITLE, {"skipped": "under --quick (starts its own PostgreSQL cluster)"})
        return
    try:
        bindir = pg_bindir()
    except (RuntimeError, OSError) as exc:
        bench.skip(f"no PostgreSQL binaries: {exc}")
    if not (bindir / "initdb").exists():
        bench.skip(f"no initdb in {bindir}")
    cluster = PostgresCluster()
    try:
        cluster.start()
    except (RuntimeError, TimeoutError, OSError) as exc:
        cluster.stop()
        bench.skip(f"could not start a PostgreSQL cluster: {exc}")
    try:
        runs = [_one_failover(cluster) for _ in range(RUNS)]
    finally:
        cluster.stop()
    to_write = [r["kill_to_write"] * 1000 for r in runs]
    to_promoted = [r["kill_to_promoted"] * 1000 for r in runs]
    bench.record(
        TITLE,
        {
            "runs": RUNS,
            "kill -> first router write, median (ms)": round(statistics.median(to_write), 1),
            "kill -> first router write, min..max (ms)": (
                f"{min(to_write):.1f}..{max(to_write):.1f}"
            ),
            "kill -> pg_ctl promote -w returned, median (ms)": round(
                statistics.median(to_promoted), 1
            ),
            "failed write attempts during the gap, median": statistics.median(
                r["failed_attempts"] for r in runs
            ),
            "each run: kill -> write / kill -> promoted (ms)": ", ".join(
                f"{w:.0f}/{p:.0f}" for w, p in zip(to_write, to_promoted, strict=True)
            ),
        },
        note=(
            "A writer thread commits through the router every 10 ms; the primary's process "
            "group is SIGKILLed and `pg_ctl promote -w` runs on the standby right after. "
            "The multi-host URL (`target_session_attrs=read-write`, `pool_pre_ping=True`) "
            "finds the promoted server on the first write attempted after the promotion "
            "(often before `pg_ctl` notices: it polls every 100 ms); the router retries no "
            "write. A run near 5 s is the server's: the standby logged 'received promote "
            "request', then waited `wal_retrieve_retry_interval` (5 s) before ending recovery."
        ),
    )
