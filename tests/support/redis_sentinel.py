"""A throw-away Redis master, one replica and three sentinels, for failover tests.

The shared Redis on 6379 is never touched: every process runs from a temporary directory
on free loopback ports (``redis-server CONF --sentinel`` for the sentinels). Sentinel
settings are short so a test sees a promotion within a few seconds: the master is
declared down after 1 s without an answer, two sentinels must agree (quorum 2).

```
group = SentinelGroup().start()
try:
    group.sentinels                  # [("127.0.0.1", port), ...] for redis.sentinel.Sentinel
    group.url                        # redis+sentinel://127.0.0.1:p1,.../spmaster
    killed = group.kill_master()     # SIGKILL; returns the port that was master
    group.wait_for_promotion(killed) # the replica is master now (its port)
    group.restore()                  # the killed server back, as a replica of the new master
finally:
    group.stop()
```
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.servers import free_port, wait_for_port

SERVICE = "spmaster"
DOWN_AFTER_MS = 1000
# Also the pause a sentinel keeps before it fails the same master over again (twice this),
# so it is kept short: a test module fails over several times.
FAILOVER_TIMEOUT_MS = 2000


class SentinelGroup:
    """Two `redis-server` data nodes (a master and its replica) watched by three sentinels."""

    def __init__(self, service: str = SERVICE) -> None:
        self.service = service
        self.data_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.root: Path | None = None
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self.killed: int | None = None

    # -- addresses -------------------------------------------------------------------------

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", port) for port in self.sentinel_ports]

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL of the group (db 0)."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def master_port(self) -> int:
        """The master's port as a sentinel reports it (the first that answers)."""
        for port in self.sentinel_ports:
            with contextlib.suppress(Exception):
                reply = self.ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                return int(reply[1])
        raise RuntimeError("no sentinel answers")

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> SentinelGroup:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not on PATH")
        self.root = Path(tempfile.mkdtemp(prefix="sp-sentinel-"))
        atexit.register(self.stop)
        master, replica = self.data_ports
        self._start_data(master, None)
        self._start_data(replica, master)
        for port in self.sentinel_ports:
            self._start_sentinel(port, master)
        self.wait_healthy(master)
        return self

    def _start_data(self, port: int, master: int | None) -> None:
        assert self.root is not None
        workdir = self.root / str(port)
        workdir.mkdir(exist_ok=True)
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(workdir), "--logfile", "redis.log"]
        # A replica syncs at once (the default waits 5 s for more replicas to share a sync).
        args += ["--repl-diskless-sync-delay", "0"]
        if master is not None:
            args += ["--replicaof", "127.0.0.1", str(master)]
        self._spawn(port, args)

    def _start_sentinel(self, port: int, master: int) -> None:
        assert self.root is not None
        workdir = self.root / str(port)
        workdir.mkdir(exist_ok=True)
        conf = workdir / "sentinel.conf"
        conf.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f"dir {workdir}\n"
            "logfile sentinel.log\n"
            f"sentinel monitor {self.service} 127.0.0.1 {master} 2\n"
            f"sentinel down-after-milliseconds {self.service} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {self.service} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {self.service} 1\n"
        )
        self._spawn(port, ["redis-server", str(conf), "--sentinel"])

    def _spawn(self, port: int, args: list[str]) -> None:
        self._procs[port] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(port)

    def ask(self, port: int, *command: str) -> Any:
        """Run one command on the server at `port` (a fresh connection, closed after)."""
        import redis

        with redis.Redis(
            port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True
        ) as client:
            return client.execute_command(*command)

    def role(self, port: int) -> str:
        reply = self.ask(port, "ROLE")
        return str(reply[0])

    def wait_healthy(self, master: int, timeout: float = 30.0) -> None:
        """Wait until `master` replicates to a live replica and every sentinel sees it,
        the replica and the two other sentinels: a failover can then happen."""
        deadline = time.monotonic() + timeout
        problem = "not checked"
        while time.monotonic() < deadline:
            problem = self._health_problem(master)
            if not problem:
                return
            time.sleep(0.1)
        raise TimeoutError(f"sentinel group not healthy after {timeout}s: {problem}")

    def _health_problem(self, master: int) -> str:
        try:
            role = self.ask(master, "ROLE")
            if role[0] != "master" or len(role[2]) != 1:
                return f"{master} is not a master with one replica: {role}"
            for port in self.sentinel_ports:
                fields = self.ask(port, "SENTINEL", "MASTER", self.service)  # a dict
                if int(fields["port"]) != master or "down" in fields["flags"]:
                    return f"sentinel {port} sees {fields['port']} ({fields['flags']})"
                if fields["num-other-sentinels"] != "2":
                    return f"sentinel {port} knows {fields['num-other-sentinels']} others"
                replicas = self.ask(port, "SENTINEL", "REPLICAS", self.service)
                healthy = [
                    r
                    for r in replicas
                    if "down" not in r["flags"] and r["master-link-status"] == "ok"
                ]
                if len(healthy) != 1:
                    return f"sentinel {port} sees no healthy replica yet"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return ""

    def kill_master(self) -> int:
        """SIGKILL the current master (connections drop, nothing is saved); its port."""
        port = self.master_port()
        proc = self._procs.pop(port)
        proc.kill()
        proc.wait()
        self.killed = port
        return port

    def wait_for_promotion(self, old: int, timeout: float = 30.0) -> int:
        """Wait until the sentinels name a master other than `old` and it acts as one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                port = self.master_port()
                if port != old and self.role(port) == "master":
                    return port
            time.sleep(0.05)
        raise TimeoutError(f"no replica promoted {timeout}s after {old} went down")

    def restore(self) -> None:
        """Start the killed server (if any) again as a replica of the new master, and wait
        until the group can fail over once more."""
        if self.killed is None:
            self.wait_healthy(self.master_port())
            return
        master = self.wait_for_promotion(self.killed)
        self._start_data(self.killed, master)
        self.killed = None
        self.wait_healthy(master)

    def wait_replicated(self) -> None:
        """Wait until the replica has every write the master took so far (``WAIT 1``)."""
        acked = self.ask(self.master_port(), "WAIT", "1", "5000")
        if acked != 1:
            raise TimeoutError("the replica did not acknowledge the master's writes in 5 s")

    def stop(self) -> None:
        for proc in self._procs.values():
            proc.kill()
            proc.wait()
        self._procs.clear()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
