"""A throw-away 3-node RabbitMQ cluster on loopback, beside the shared server.

The shared RabbitMQ on 5672 is never touched: each node gets its own node name
(``<prefix>1..3@localhost``), AMQP port, Erlang distribution port, data and log
directories, an empty enabled-plugins file and the cluster's own Erlang cookie, all in a
temporary directory. Nodes 2 and 3 join node 1 with ``rabbitmqctl join_cluster``. Tests
may SIGKILL a node and start it again.

```
cluster = RabbitMQCluster().start()   # about 15 s
try:
    cluster.urls                      # amqp://guest:guest@127.0.0.1:<port>/%2F, one per node
    cluster.leader("orders")          # the node (1..3) holding a quorum queue's leader
    cluster.kill(2); cluster.restart(2)
finally:
    cluster.stop()
```
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.servers import wait_for_port

SCRIPTS = Path("/usr/lib/rabbitmq/bin")  # /usr/sbin's wrappers switch to the system user


def _free_block(size: int) -> int:
    """A base port such that base..base+size-1 and base+10..base+10+size-1 are free."""
    for _ in range(200):
        base = 20000 + secrets.randbelow(20000)
        ports = [*range(base, base + size), *range(base + 10, base + 10 + size)]
        sockets = []
        try:
            for port in ports:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise RuntimeError("no free block of ports for a RabbitMQ cluster")


class RabbitMQCluster:
    """Three clustered RabbitMQ nodes in a temporary directory, on free ports."""

    def __init__(self) -> None:
        if not (SCRIPTS / "rabbitmq-server").exists():
            raise RuntimeError(f"no RabbitMQ scripts in {SCRIPTS}")
        self.prefix = "sp" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(6))
        self.base_port = _free_block(3)
        self.root = Path(tempfile.mkdtemp(prefix="sp-rabbitmq-"))
        self._launchers: dict[int, subprocess.Popen[bytes]] = {}

    # -- addresses --------------------------------------------------------------------

    def name(self, node: int) -> str:
        return f"{self.prefix}{node}@localhost"

    def port(self, node: int) -> int:
        return self.base_port + node - 1

    def url(self, node: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port(node)}/%2F"

    @property
    def urls(self) -> list[str]:
        return [self.url(node) for node in (1, 2, 3)]

    # -- lifecycle --------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env["HOME"] = str(self.root)  # where the nodes and rabbitmqctl find the cookie
        env["RABBITMQ_CONF_ENV_FILE"] = str(self.root / "rabbitmq-env.conf")
        return env

    def start(self) -> RabbitMQCluster:
        try:
            cookie = self.root / ".erlang.cookie"
            cookie.write_text("".join(secrets.choice(string.ascii_uppercase) for _ in range(20)))
            cookie.chmod(0o400)
            (self.root / "enabled_plugins").write_text("[].\n")
            (self.root / "rabbitmq-env.conf").write_text("# keeps the system node's file out\n")
            for node in (1, 2, 3):
                self._boot(node)
            for node in (1, 2, 3):
                self._await(node)
            for node in (2, 3):
                self.ctl(node, "stop_app")
                self.ctl(node, "join_cluster", self.name(1))
                self.ctl(node, "start_app")
            self.ctl(1, "await_online_nodes", "3", "--timeout", "60")
        except BaseException:
            self.stop()
            raise
        return self

    def _boot(self, node: int) -> None:
        directory = self.root / f"n{node}"
        directory.mkdir(exist_ok=True)
        (directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port(node)}\nlog.console = false\n"
            "loopback_users = none\n"
        )
        # A retry cut off on its way from a quorum delay queue to a dead leader is moved
        # again after this (RabbitMQ's default: 3 minutes); docs/scaling-out.md says so.
        (directory / "advanced.config").write_text(
            "[{rabbit, [{dead_letter_worker_publisher_confirm_timeout, 5000}]}].\n"
        )
        (directory / "pid").unlink(missing_ok=True)
        env = self._env()
        env.update(
            RABBITMQ_NODENAME=self.name(node),
            RABBITMQ_DIST_PORT=str(self.port(node) + 10),
            RABBITMQ_MNESIA_BASE=str(directory),
            RABBITMQ_LOG_BASE=str(directory),
            RABBITMQ_PID_FILE=str(directory / "pid"),
            RABBITMQ_CONFIG_FILE=str(directory / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(directory / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.root / "enabled_plugins"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        with open(directory / "stdout.log", "ab") as log:
            self._launchers[node] = subprocess.Popen(
                [str(SCRIPTS / "rabbitmq-server")],
                cwd=directory,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() kills all of it
            )

    def _await(self, node: int) -> None:
        launcher = self._launchers[node]
        self.ctl(node, "wait", "--pid", str(launcher.pid), "--timeout", "110", timeout=120)
        wait_for_port(self.port(node), timeout=30)

    def ctl(self, node: int, *args: str, timeout: float = 90) -> str:
        """``rabbitmqctl`` on `node`; raises with its output if it fails."""
        result = subprocess.run(
            [str(SCRIPTS / "rabbitmqctl"), "-n", self.name(node), *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} on {self.name(node)} failed: "
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout

    def _beam_pid(self, node: int) -> int | None:
        try:
            pid = int((self.root / f"n{node}" / "pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def alive(self, node: int) -> bool:
        return self._beam_pid(node) is not None

    def kill(self, node: int) -> None:
        """SIGKILL the node's Erlang VM (what a crash or a lost machine looks like)."""
        pid = self._beam_pid(node)
        if pid is None:
            raise RuntimeError(f"{self.name(node)} is not running")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        self._kill_group(node)

    def restart(self, node: int) -> None:
        """Start a killed node again; it rejoins the cluster."""
        self._boot(node)
        self._await(node)
        running = sum(self.alive(n) for n in (1, 2, 3))
        self.ctl(node, "await_online_nodes", str(running), "--timeout", "60")

    def _kill_group(self, node: int) -> None:
        launcher = self._launchers.get(node)
        if launcher is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(launcher.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            launcher.wait(timeout=10)

    def stop(self) -> None:
        for node in (1, 2, 3):
            pid = self._beam_pid(node)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while any(self.alive(n) for n in (1, 2, 3)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for node in (1, 2, 3):
            self._kill_group(node)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- what the nodes say -----------------------------------------------------------

    def leader(self, queue: str) -> int:
        """The node (1..3) holding `queue`'s leader (a quorum queue), as the cluster says."""
        for node in (1, 2, 3):
            if not self.alive(node):
                continue
            out = self.ctl(node, "list_queues", "name", "leader", "--quiet", "--no-table-headers")
            for line in out.splitlines():
                name, _, leader = line.partition("\t")
                if name == queue and leader.strip():
                    return int(leader.strip().split("@")[0].removeprefix(self.prefix))
        raise RuntimeError(f"no leader known for {queue!r}")

    def describe(self, prefix: str) -> str:
        """Messages (all, ready, unacked), leader and online members of the queues named
        `prefix`...: what a test prints when it times out."""
        node = next(n for n in (1, 2, 3) if self.alive(n))
        out = self.ctl(
            node,
            "list_queues",
            "name",
            "messages",
            "messages_ready",
            "messages_unacknowledged",
            "leader",
            "online",
            "--quiet",
            "--no-table-headers",
        )
        queues = "; ".join(line for line in out.splitlines() if line.startswith(prefix))
        said = [
            line
            for log in sorted(self.root.glob("n*/*.log"))
            for line in log.read_text(errors="replace").splitlines()
            if "dlx" in line.lower() or "dead-letter" in line.lower()
        ]
        return f"{queues}\nthe nodes said of dead-lettering: {said[-8:]}"

    def depth(self, queue: str) -> int:
        """Messages ready in `queue`, as a live node reports it."""
        node = next(n for n in (1, 2, 3) if self.alive(n))
        out = self.ctl(
            node, "list_queues", "name", "messages_ready", "--quiet", "--no-table-headers"
        )
        for line in out.splitlines():
            name, _, count = line.partition("\t")
            if name == queue:
                return int(count)
        return 0
