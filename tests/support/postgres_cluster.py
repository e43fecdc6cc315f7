"""A throw-away PostgreSQL primary with a streaming replica, for tests that pause or kill them.

The shared PostgreSQL on 5432 is never touched: `PostgresCluster` runs `initdb` for a primary
and `pg_basebackup -R` for a hot-standby replica in a temporary directory owned by the
``postgres`` user (PostgreSQL refuses to run as root), on free loopback ports. Tests may
pause replay on the replica, SIGKILL its postmaster and start it again.

It also fails over: `kill_primary` SIGKILLs the primary's whole process group (a lost node),
`promote_replica` runs ``pg_ctl promote`` and swaps the roles (the two data directories are
nodes ``a`` and ``b``; ``primary_*`` and ``replica_*`` always name the current roles), and
`rejoin_former_primary` rebuilds the dead node as a standby of the new primary, so one
cluster serves several failovers. With ``log_writes=True`` each server logs the writing
statements it receives, and `writes_received_in_recovery` reads them back.

```
cluster = PostgresCluster().start()
try:
    cluster.primary_url    # postgresql+psycopg://postgres@127.0.0.1:<port>/postgres
    cluster.replica_url
    cluster.kill_replica(); cluster.start_replica()
    cluster.kill_primary(); cluster.promote_replica(); cluster.rejoin_former_primary()
finally:
    cluster.stop()
```
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.servers import free_port, wait_for_port

PG_USER = "postgres"


def pg_bindir() -> Path:
    """Where initdb, pg_ctl and pg_basebackup live (`pg_config --bindir`)."""
    env = os.environ.get("SCALEPATTERNS_PG_BINDIR")
    if env:
        return Path(env)
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        raise RuntimeError("pg_config is not on PATH: cannot find the PostgreSQL binaries")
    out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


# What log_statement=mod writes for a statement a server received (simple or extended protocol)
_LOGGED_WRITE = re.compile(r"LOG:\s+(?:statement|execute [^:]*): (.*)")


def _process_group(pgid: int) -> list[int]:
    """The processes of process group `pgid` (Linux /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                # fields after the parenthesised command: state, ppid, pgrp, ...
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    members.append(int(entry.name))
    return members


def _running(pid: int) -> bool:
    """Whether `pid` exists and has not exited (a zombie has exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class PostgresCluster:
    """A primary and one streaming replica in a temporary directory, on free ports."""

    def __init__(self, *, log_writes: bool = False) -> None:
        self.bindir = pg_bindir()
        self.ports = {"a": free_port(), "b": free_port()}
        self.primary_node, self.replica_node = "a", "b"
        self.log_writes = log_writes
        self._killed: int | None = None  # the former primary's postmaster, until reaped
        self.root: Path | None = None
        self._started = False

    # -- URLs ------------------------------------------------------------------------------

    def url(self, port: int, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{PG_USER}@127.0.0.1:{port}/postgres"

    def multihost_url(self, driver: str = "postgresql+psycopg") -> str:
        """Both nodes, ``a`` first, keeping the one that accepts writes (libpq's failover)."""
        hosts = "&".join(f"host=127.0.0.1:{self.ports[n]}" for n in ("a", "b"))
        return f"{driver}://{PG_USER}@/postgres?{hosts}&target_session_attrs=read-write"

    @property
    def primary_port(self) -> int:
        return self.ports[self.primary_node]

    @property
    def replica_port(self) -> int:
        return self.ports[self.replica_node]

    @property
    def primary_url(self) -> str:
        return self.url(self.primary_port)

    @property
    def replica_url(self) -> str:
        return self.url(self.replica_port)

    # -- lifecycle -------------------------------------------------------------------------

    def node_dir(self, node: str) -> Path:
        assert self.root is not None
        return self.root / f"node-{node}"

    @property
    def primary_dir(self) -> Path:
        return self.node_dir(self.primary_node)

    @property
    def replica_dir(self) -> Path:
        return self.node_dir(self.replica_node)

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None
        return self.root / "sockets"

    def _run(self, *args: str, timeout: float = 60) -> None:
        cmd = ["runuser", "-u", PG_USER, "--", *args] if os.geteuid() == 0 else list(args)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({result.returncode}): "
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )

    def _bin(self, name: str) -> str:
        return str(self.bindir / name)

    def start(self) -> PostgresCluster:
        if not (self.bindir / "initdb").exists():
            raise RuntimeError(f"no initdb in {self.bindir}")
        self.root = Path(tempfile.mkdtemp(prefix="sp-pgcluster-"))
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            entry = pwd.getpwnam(PG_USER)
            for path in (self.root, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        atexit.register(self.stop)
        self._run(
            self._bin("initdb"),
            "-D",
            str(self.primary_dir),
            "-U",
            PG_USER,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        with (self.primary_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\nwal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "shared_buffers = 16MB\nmax_connections = 60\n"
                # a paused replica must not cancel queries or lose WAL while tests inspect it
                "max_standby_streaming_delay = -1\nwal_keep_size = 256MB\n"
            )
            if self.log_writes:
                conf.write("log_statement = 'mod'\n")
        with (self.primary_dir / "pg_hba.conf").open("a") as hba:
            hba.write("\nhost replication all 127.0.0.1/32 trust\n")
        self._started = True
        self._pg_ctl_start(self.primary_dir, self.primary_port)
        self._base_backup()
        self.start_replica()
        self._wait_until_streaming()
        return self

    def _base_backup(self) -> None:
        """Copy the primary into the replica's (empty) directory, set up as its standby."""
        self._run(
            self._bin("pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary_port),
            "-U",
            PG_USER,
            "-D",
            str(self.replica_dir),
            "-R",
            "-X",
            "stream",
            "--no-sync",
            timeout=120,
        )

    def _pg_ctl_start(self, data_dir: Path, port: int) -> None:
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {self.socket_dir}"
        self._run(
            self._bin("pg_ctl"),
            "-D",
            str(data_dir),
            "-o",
            options,
            "-l",
            str(self._log_path(data_dir)),
            "-w",
            "-t",
            "60",
            "start",
            timeout=90,
        )
        wait_for_port(port, timeout=30)

    def start_replica(self, attempts: int = 5) -> None:
        """Start (or restart after `kill_replica`) the replica on its port.

        Retried: after a SIGKILL, the old postmaster's children may hold its shared memory
        for a moment, and PostgreSQL refuses to start until they are gone.
        """
        for attempt in range(attempts):
            try:
                self._pg_ctl_start(self.replica_dir, self.replica_port)
                return
            except (RuntimeError, TimeoutError):
                if attempt == attempts - 1:
                    raise
                time.sleep(1.0)

    def _wait_until_streaming(self, timeout: float = 30.0) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(self.primary_url)
        deadline = time.monotonic() + timeout
        try:
            while True:
                with engine.connect() as conn:
                    count = conn.execute(
                        sa.text("SELECT count(*) FROM pg_stat_replication WHERE state='streaming'")
                    ).scalar_one()
                if count:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError("the replica did not start streaming")
                time.sleep(0.1)
        finally:
            engine.dispose()

    def wait_replayed(self, timeout: float = 20.0) -> None:
        """Block until the replica has replayed everything the primary has written so far."""
        import sqlalchemy as sa

        primary = sa.create_engine(self.primary_url, poolclass=sa.pool.NullPool)
        replica = sa.create_engine(self.replica_url, poolclass=sa.pool.NullPool)
        lsn = "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')"
        replayed = "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')"
        try:
            with primary.connect() as conn:
                target = conn.execute(sa.text(lsn)).scalar_one()
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with replica.connect() as conn:
                        position = conn.execute(sa.text(replayed)).scalar_one()
                    if position is not None and position >= target:
                        return
                except sa.exc.OperationalError:
                    pass  # restarting
                if time.monotonic() > deadline:
                    raise TimeoutError("the replica did not catch up with the primary")
                time.sleep(0.05)
        finally:
            primary.dispose()
            replica.dispose()

    def set_replay(self, action: str) -> None:
        """``"pause"`` or ``"resume"`` WAL replay on the replica."""
        if action not in ("pause", "resume"):
            raise ValueError(f"replay action is 'pause' or 'resume', not {action!r}")
        import sqlalchemy as sa

        engine = sa.create_engine(self.replica_url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f"SELECT pg_wal_replay_{action}()"))
                conn.commit()
        finally:
            engine.dispose()

    def _postmaster_pid(self, data_dir: Path) -> int | None:
        try:
            return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill_replica(self) -> None:
        """SIGKILL the replica's postmaster (and wait until its port is closed)."""
        pid = self._postmaster_pid(self.replica_dir)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._wait_gone(pid)
        # orphaned backends of a killed postmaster exit on their own; give them a moment
        time.sleep(0.2)

    def _wait_gone(self, pid: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    # -- failover --------------------------------------------------------------------------

    def kill_primary(self) -> None:
        """SIGKILL the primary's postmaster and every backend with it, as when its node dies.

        Returns once every one of those processes has exited (their sockets are closed:
        connections are refused or cut); reaping them may take a moment longer (see
        `rejoin_former_primary`). pg_ctl starts the postmaster in its own session, so its
        process group is the server.
        """
        pid = self._postmaster_pid(self.primary_dir)
        if pid is None:
            raise RuntimeError("the primary is not running")
        members = _process_group(pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_running(member) for member in members) and time.monotonic() < deadline:
            time.sleep(0.002)
        self._killed = pid

    def promote_replica(self) -> None:
        """``pg_ctl promote`` the replica (waits until it accepts writes); swap the roles.

        Afterwards ``primary_*`` names the promoted node and ``replica_*`` the former
        primary (dead until `rejoin_former_primary` or `restart_former_primary`).
        """
        self._run(self._bin("pg_ctl"), "-D", str(self.replica_dir), "-w", "-t", "60", "promote")
        self.primary_node, self.replica_node = self.replica_node, self.primary_node

    def _former_primary_stopped(self) -> None:
        if self._killed is not None:
            self._wait_gone(self._killed)
            self._killed = None
        with contextlib.suppress(FileNotFoundError):
            (self.replica_dir / "postmaster.pid").unlink()

    def rejoin_former_primary(self) -> None:
        """Rebuild the former primary as a streaming standby of the new one (a fresh base
        backup, as a failover manager would with pg_rewind or a re-clone)."""
        self._former_primary_stopped()
        pid = self._postmaster_pid(self.replica_dir)
        if pid is not None:
            self._run(self._bin("pg_ctl"), "-D", str(self.replica_dir), "-m", "immediate", "stop")
        shutil.rmtree(self.replica_dir)
        self._base_backup()
        self.start_replica()
        self._wait_until_streaming()

    def restart_former_primary(self, *, as_standby: bool) -> None:
        """Start the former primary again without rebuilding it: the mistakes a failover
        manager exists to prevent.

        ``as_standby=True``: as a standby of the new primary. Holding WAL the new primary
        never received, it cannot follow the new timeline and stays in recovery on the old
        one, readable, with a replay position past the promotion. ``as_standby=False``: as
        a primary on the old timeline, accepting writes (an unfenced former primary).
        """
        self._former_primary_stopped()
        signal_file = self.replica_dir / "standby.signal"
        if not as_standby:
            signal_file.unlink(missing_ok=True)
        else:
            signal_file.write_text("")
            with (self.replica_dir / "postgresql.auto.conf").open("a") as conf:
                conf.write(
                    f"\nprimary_conninfo = 'host=127.0.0.1 port={self.primary_port} "
                    f"user={PG_USER}'\n"
                )
            if os.geteuid() == 0:
                entry = pwd.getpwnam(PG_USER)
                os.chown(signal_file, entry.pw_uid, entry.pw_gid)
        self.start_replica()

    def stop_former_primary(self) -> None:
        """Stop the node in the replica role (fast), e.g. a restarted former primary."""
        self._run(self._bin("pg_ctl"), "-D", str(self.replica_dir), "-m", "immediate", "stop")

    def _log_path(self, data_dir: Path) -> Path:
        return data_dir.parent / f"{data_dir.name}.log"

    def writes_received_in_recovery(self) -> list[str]:
        """Writing statements (``log_writes=True``) either server received while in recovery.

        Read from the servers' own logs: a server is in recovery from "entering standby
        mode" until it is promoted ("selected new timeline ID") or stops.
        """
        if not self.log_writes:
            raise RuntimeError("start the cluster with log_writes=True")
        found = []
        for node in ("a", "b"):
            path = self._log_path(self.node_dir(node))
            in_recovery = False
            for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
                if "entering standby mode" in line:
                    in_recovery = True
                elif "selected new timeline ID" in line or "starting PostgreSQL" in line:
                    in_recovery = False
                elif in_recovery and (match := _LOGGED_WRITE.search(line)):
                    found.append(f"node {node}: {match[1]}")
        return found

    def stop(self) -> None:
        """Stop both servers (immediate mode) and remove the directory; safe to call twice."""
        if self.root is None:
            return
        if self._started:
            for data_dir in (self.node_dir("a"), self.node_dir("b")):
                if (data_dir / "postmaster.pid").exists():
                    with contextlib.suppress(Exception):
                        self._run(
                            self._bin("pg_ctl"), "-D", str(data_dir), "-m", "immediate", "stop"
                        )
                pid = self._postmaster_pid(data_dir)
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
        self._started = False
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
