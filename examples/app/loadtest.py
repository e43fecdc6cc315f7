"""The load test: the naive, the patterned and the async build, same servers, same workload,
side by side.

    python -m examples.app.loadtest                 # 5 s warm-up + 30 s per build, embedded
    SP_APP_POSTGRES_URL=... SP_APP_REDIS_URL=... SP_APP_AMQP_URL=... \\
        python -m examples.app.loadtest --pg-cluster # the real servers, a real replica
    python -m examples.app.loadtest --quick         # a few seconds per build
    python -m examples.app.loadtest --builds patterned,async  # some builds only

Each build runs as its own uvicorn process, on databases, Redis keys and queues of its own
(seeded alike); they are served at once and loaded in turns: `--rounds` rounds, each
giving every build its share of `--duration`, the order rotating, so whatever else runs
on the machine falls on every build alike. The driver (asyncio + httpx, in this process)
runs `--clients` well-behaved clients, each sending its next request when the last one
answered: a read-heavy Zipf workload (94% `GET /users/{id}` over a Zipf(1.1) popularity,
5% `PUT` of a profile, 1% signups), plus one noisy client hammering hot profiles as fast
as it can over `--noisy` connections (honouring `Retry-After` when refused). The
servers' own counters (`GET /stats`) give the database queries per request on primaries
and replicas, the cache hit ratio and the queue's figures, measured after an unmeasured
warm-up; /proc gives each server's CPU time. It writes a Markdown table, a JSON file and
a PNG chart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from examples.app.settings import BUILDS, Settings

ROOT = Path(__file__).resolve().parents[2]
ORDER = ("naive", "patterned", "async")


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0

    def add(self, status: int, seconds: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status < 400:
            self.latencies.append(seconds)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + self.errors

    @property
    def answered(self) -> int:
        return sum(n for status, n in self.statuses.items() if status < 400)

    def merge(self, other: Tally) -> None:
        self.latencies.extend(other.latencies)
        for status, n in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n
        self.errors += other.errors


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def zipf_ids(users: int, size: int, s: float, rng: random.Random) -> list[int]:
    """`size` user ids drawn with Zipf(s) popularity; rank 1 is a random user, not id 1."""
    weights = [1.0 / (rank**s) for rank in range(1, users + 1)]
    ids = list(range(1, users + 1))
    rng.shuffle(ids)  # popular users land on every shard
    return rng.choices(ids, weights=weights, k=size)


async def _client(  # noqa: PLR0917
    http: httpx.AsyncClient,
    name: str,
    ids: list[int],
    stop: float,
    tally: Tally,
    seed: int,
    part: int,
) -> None:
    # Each part of the run (the warm-up, each round) goes on with a stretch of requests
    # of its own: a round replaying the last one's reads would find them all cached.
    rng = random.Random(seed * 1_000_003 + part)
    headers = {"X-Client-Id": name}
    i = part * 104_729
    while time.perf_counter() < stop:
        roll = rng.random()
        user = ids[(seed * 7919 + i) % len(ids)]
        i += 1
        started = time.perf_counter()
        try:
            if roll < 0.94:
                response = await http.get(f"/users/{user}", headers=headers)
            elif roll < 0.99:
                response = await http.put(
                    f"/users/{user}", json={"name": f"User {user} v{i}"}, headers=headers
                )
            else:
                response = await http.post(
                    "/users",
                    json={"email": f"new{secrets.token_hex(4)}@example.com", "name": "New"},
                    headers=headers,
                )
        except httpx.HTTPError:
            tally.errors += 1
            continue
        tally.add(response.status_code, time.perf_counter() - started)


async def _noisy(http: httpx.AsyncClient, ids: list[int], stop: float, tally: Tally) -> None:
    headers = {"X-Client-Id": "noisy-scraper"}
    i = 0
    while time.perf_counter() < stop:
        started = time.perf_counter()
        try:
            response = await http.get(f"/users/{ids[i % 50]}", headers=headers)
        except httpx.HTTPError:
            tally.errors += 1
            continue
        i += 1
        tally.add(response.status_code, time.perf_counter() - started)
        if response.status_code == 429:
            # a client library that honours Retry-After (capped, to keep probing)
            await asyncio.sleep(min(1.0, float(response.headers.get("Retry-After", "1"))))


async def drive(  # noqa: PLR0917
    base_url: str, ids: list[int], clients: int, noisy: int, duration: float, part: int = 0
) -> dict[str, Tally]:
    """Each client has its own connection and cookie jar (its own session), as browsers do."""

    def http() -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=base_url, timeout=30.0)

    tallies = {"clients": Tally(), "noisy": Tally()}
    pool = [http() for _ in range(clients + noisy)]
    try:
        # warm-up: connections open, code paths imported
        await asyncio.gather(*(h.get(f"/users/{ids[i]}") for i, h in enumerate(pool)))
        stop = time.perf_counter() + duration
        await asyncio.gather(
            *(
                _client(pool[c], f"client-{c}", ids, stop, tallies["clients"], c + 1, part)
                for c in range(clients)
            ),
            *(_noisy(h, ids, stop, tallies["noisy"]) for h in pool[clients:]),
        )
    finally:
        for h in pool:
            await h.aclose()
    return tallies


@dataclass
class Server:
    """One build's uvicorn process."""

    build: str
    process: subprocess.Popen[bytes]
    base: str

    @classmethod
    def start(cls, build: str, env: dict[str, str]) -> Server:
        port = _free_port()
        log = Path(env["SP_APP_DATA_DIR"]) / f"{build}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "examples.app", "serve", "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = cls(build, process, f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the {build} server exited: see {log}")
            try:
                if httpx.get(f"{server.base}/health", timeout=1).status_code == 200:
                    return server
            except httpx.HTTPError:
                time.sleep(0.2)
        server.stop()
        raise RuntimeError(f"the {build} server did not start: see {log}")

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.base}/stats", timeout=10).json()  # type: ignore[no-any-return]

    def drained(self) -> bool:
        """Every signup's email sent or dead-lettered (the naive build sends inline)."""
        if self.build == "naive":
            return True
        figures = self.stats()
        emails = figures["emails"]["sent"] + figures["dead_letters"]
        return bool(emails >= figures["analytics"].get("user.signed_up", 0))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Measured:
    """One build's measured rounds, added up."""

    tallies: dict[str, Tally] = field(
        default_factory=lambda: {"clients": Tally(), "noisy": Tally()}
    )
    before: dict[str, Any] | None = None
    elapsed: float = 0.0
    cpu: float = 0.0
    rounds: list[float] = field(default_factory=list)  # answered requests/s, good clients


def measure(
    builds: list[str], envs: dict[str, dict[str, str]], ids: list[int], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Serve every build at once, warm each up, then load them in turns.

    Each round gives each build `duration / rounds` seconds of load, one build at a time,
    the order rotating every round: whatever else runs on the machine meanwhile falls on
    every build alike. A build is idle while another is loaded (its workers may drain).
    """
    servers: dict[str, Server] = {}
    try:
        for build in builds:
            servers[build] = Server.start(build, envs[build])
        if args.warmup > 0:  # the same unmeasured load first: a warm cache, open pools
            for server in servers.values():
                asyncio.run(drive(server.base, ids, args.clients, args.noisy, args.warmup))
        measured = {build: Measured() for build in builds}
        seconds = args.duration / args.rounds
        for part in range(1, args.rounds + 1):
            shift = (part - 1) % len(builds)
            for build in builds[shift:] + builds[:shift]:
                print(f"round {part}/{args.rounds}: {build}, {seconds:.0f} s", flush=True)
                run_round(servers[build], measured[build], ids, args, seconds, part)
        # let the workers drain what the signups queued (bounded)
        deadline = time.monotonic() + 15
        while not all(s.drained() for s in servers.values()) and time.monotonic() < deadline:
            time.sleep(0.5)
        results = {}
        for build, server in servers.items():
            m = measured[build]
            assert m.before is not None
            results[build] = summarise(
                build, m.tallies, m.before, server.stats(), m.elapsed, cpu=m.cpu
            )
            results[build]["clients_per_second_rounds"] = [round(r, 1) for r in m.rounds]
            results[build]["clients_per_second_range"] = f"{min(m.rounds):.0f}..{max(m.rounds):.0f}"
        return results
    finally:
        for server in servers.values():
            server.stop()


def run_round(  # noqa: PLR0917
    server: Server,
    measured: Measured,
    ids: list[int],
    args: argparse.Namespace,
    seconds: float,
    part: int,
) -> None:
    if measured.before is None:
        measured.before = server.stats()
    cpu_before = cpu_seconds(server.process.pid)
    started = time.perf_counter()
    tallies = asyncio.run(drive(server.base, ids, args.clients, args.noisy, seconds, part))
    elapsed = time.perf_counter() - started
    measured.cpu += cpu_seconds(server.process.pid) - cpu_before
    measured.elapsed += elapsed
    measured.rounds.append(tallies["clients"].answered / elapsed)
    for kind, tally in tallies.items():
        measured.tallies[kind].merge(tally)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far; NaN where /proc is missing.

    The app server's CPU per request depends far less on what else runs on the machine
    than its requests per second do.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    # utime and stime are fields 14 and 15 of proc(5), in clock ticks
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summarise(
    build: str,
    tallies: dict[str, Tally],
    before: dict[str, Any],
    after: dict[str, Any],
    elapsed: float,
    *,
    cpu: float = float("nan"),
) -> dict[str, Any]:
    good, noisy = tallies["clients"], tallies["noisy"]
    total = good.total + noisy.total
    limited = good.statuses.get(429, 0) + noisy.statuses.get(429, 0)
    served = sum(n for s, n in {**good.statuses}.items() if s < 400) + sum(
        n for s, n in noisy.statuses.items() if s < 400
    )
    requests = max(1, after["requests"].get("requests", 0) - before["requests"].get("requests", 0))
    primary = after["queries"]["primary"] - before["queries"]["primary"]
    replica = after["queries"]["replica"] - before["queries"]["replica"]
    hits = after["cache"]["hits"] - before["cache"]["hits"]
    misses = after["cache"]["misses"] - before["cache"]["misses"]
    return {
        "build": build,
        "seconds": round(elapsed, 1),
        "requests": total,
        "requests_per_second": round(total / elapsed, 1),
        "served_per_second": round(served / elapsed, 1),
        "clients_per_second": round(
            sum(n for s, n in good.statuses.items() if s < 400) / elapsed, 1
        ),
        "p50_ms": round(percentile(good.latencies, 0.50) * 1000, 1),
        "p90_ms": round(percentile(good.latencies, 0.90) * 1000, 1),
        "p99_ms": round(percentile(good.latencies, 0.99) * 1000, 1),
        "app_cpu_ms_per_request": round(cpu * 1000 / max(1, total), 2),
        "noisy_share": round(noisy.total / max(1, total), 3),
        "rate_limited_share": round(limited / max(1, total), 3),
        "clients_rate_limited": good.statuses.get(429, 0),
        "errors": good.errors
        + noisy.errors
        + sum(n for t in (good, noisy) for s, n in t.statuses.items() if s >= 500),
        "primary_queries_per_request": round(primary / requests, 3),
        "replica_queries_per_request": round(replica / requests, 3),
        "cache_hit_ratio": round(hits / max(1, hits + misses), 3),
        "messages_processed": after["messages"]["processed"] - before["messages"]["processed"],
        "messages_retried": after["messages"]["retried"] - before["messages"]["retried"],
        "messages_dead_lettered": after["messages"]["dead_lettered"]
        - before["messages"]["dead_lettered"],
        "emails_sent": after["emails"]["sent"] - before["emails"]["sent"],
        "signups": after["analytics"].get("user.signed_up", 0),
        "statuses": {str(k): v for k, v in sorted({**good.statuses}.items())},
    }


ROWS = [
    ("requests/s (all clients)", "requests_per_second", "{:.0f}"),
    ("answered requests/s, well-behaved clients", "clients_per_second", "{:.0f}"),
    ("the same, per round (lowest..highest)", "clients_per_second_range", "{}"),
    ("p50 latency, well-behaved clients (ms)", "p50_ms", "{:.1f}"),
    ("p90 latency, well-behaved clients (ms)", "p90_ms", "{:.1f}"),
    ("p99 latency, well-behaved clients (ms)", "p99_ms", "{:.1f}"),
    ("app server CPU per request (ms, workers included)", "app_cpu_ms_per_request", "{:.2f}"),
    ("primary DB queries per request", "primary_queries_per_request", "{:.3f}"),
    ("replica DB queries per request", "replica_queries_per_request", "{:.3f}"),
    ("cache hit ratio", "cache_hit_ratio", "{:.1%}"),
    ("share of requests from the noisy client", "noisy_share", "{:.1%}"),
    ("rate-limited share (429)", "rate_limited_share", "{:.1%}"),
    ("429s to well-behaved clients", "clients_rate_limited", "{}"),
    ("5xx and transport errors", "errors", "{}"),
    ("messages processed", "messages_processed", "{}"),
    ("messages retried", "messages_retried", "{}"),
    ("messages dead-lettered", "messages_dead_lettered", "{}"),
    ("welcome emails sent", "emails_sent", "{}"),
]


def table(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table: a row per figure, a column per build (in the order they ran)."""
    builds = list(results)
    lines = ["| | " + " | ".join(builds) + " |", "|---|" + "---:|" * len(builds)]
    for label, key, fmt in ROWS:
        cells = [fmt.format(results[b][key]) for b in builds]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    builds = list(results)
    palette = {"naive": "#b0b0b0", "patterned": "#2a7ab9", "async": "#e08a2c"}
    colors = [palette.get(b, "#666666") for b in builds]
    fig, axes = plt.subplots(1, 5, figsize=(20, 4))
    panels = [
        ("answered requests/s\n(well-behaved clients)", ["clients_per_second"], None),
        ("latency (ms)", ["p50_ms", "p90_ms", "p99_ms"], ["p50", "p90", "p99"]),
        ("app server CPU per request (ms)", ["app_cpu_ms_per_request"], None),
        (
            "DB queries per request",
            ["primary_queries_per_request", "replica_queries_per_request"],
            ["primary", "replica"],
        ),
        (
            "share of requests",
            ["cache_hit_ratio", "rate_limited_share"],
            ["cache hits", "rate-limited"],
        ),
    ]
    for ax, (title, keys, labels) in zip(axes, panels, strict=True):
        width = 0.8 / len(keys)
        for k, key in enumerate(keys):
            xs = [i + (k - (len(keys) - 1) / 2) * width for i in range(len(builds))]
            values = [results[b][key] for b in builds]
            bars = ax.bar(xs, values, width, color=colors, alpha=1.0 - 0.3 * k)
            for bar, value in zip(bars, values, strict=True):
                text = f"{value:.2f}" if value < 10 else f"{value:.0f}"
                label = f"{labels[k]}\n{text}" if labels else text
                ax.annotate(
                    label,
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        ax.set_xticks(range(len(builds)), builds)
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:  # noqa: PLR0915 (one linear script)
    parser = argparse.ArgumentParser(prog="python -m examples.app.loadtest")
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds of measured load per build"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="turns the builds take (duration split evenly)"
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=16, help="well-behaved clients")
    parser.add_argument("--noisy", type=int, default=6, help="connections of the noisy client")
    parser.add_argument("--quick", action="store_true", help="3 s per build, 1 round, 2000 users")
    parser.add_argument(
        "--builds",
        default=",".join(ORDER),
        type=_builds,
        help=f"comma-separated builds to run, in this order (default {','.join(ORDER)})",
    )
    parser.add_argument(
        "--pg-cluster",
        action="store_true",
        help="start a throw-away PostgreSQL primary + streaming replica (tests/support)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.users, args.warmup = 3.0, 1, 2000, 1.0
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    env = dict(os.environ)
    env.setdefault("SP_APP_PREFIX", f"sp_app_load_{secrets.token_hex(3)}")
    env.setdefault("SP_APP_EMAIL_LATENCY", "0.02")
    env.setdefault("SP_APP_EMAIL_FAILURE_RATE", "0.2")
    env.setdefault("SP_APP_RATE", "50/second")
    env.setdefault("SP_APP_BURST", "25")
    data_dir = Path(env.get("SP_APP_DATA_DIR") or "") if env.get("SP_APP_DATA_DIR") else None
    if data_dir is None:
        import tempfile

        data_dir = Path(tempfile.mkdtemp(prefix="sp-app-load-"))
        env["SP_APP_DATA_DIR"] = str(data_dir)
    cluster = None
    if args.pg_cluster:
        sys.path.insert(0, str(ROOT))
        from tests.support.postgres_cluster import PostgresCluster

        cluster = PostgresCluster().start()
        env["SP_APP_POSTGRES_URL"] = cluster.primary_url
        env["SP_APP_POSTGRES_REPLICA_URL"] = cluster.replica_url
    # Each build has its own prefix: its own shard databases (seeded alike), Redis keys,
    # queues and exchange, so builds served at once never share a cache or a worker.
    envs = {
        build: {**env, "SP_APP_BUILD": build, "SP_APP_PREFIX": f"{env['SP_APP_PREFIX']}_{build}"}
        for build in args.builds
    }
    try:
        from examples.app.db import Databases

        for build_env in envs.values():
            # seeded through sync engines, whatever the build
            databases = Databases(Settings.from_env(build_env).with_(build="patterned"))
            databases.seed(args.users)
            databases.dispose()
        if cluster is not None:
            cluster.wait_replayed()
        ids = zipf_ids(args.users, 200_000, 1.1, random.Random(7))
        results = measure(args.builds, envs, ids, args)
    finally:
        for build_env in envs.values():
            _cleanup(build_env)
        if cluster is not None:
            cluster.stop()
    where = describe(env, cluster is not None, args)
    markdown = table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "app_load.json").write_text(
        json.dumps({"where": where, "results": results}, indent=2)
    )
    chart(results, args.out / "app_load.png")
    print(f"\n{where}\n\n{markdown}")
    (args.out / "app_load.md").write_text(f"{where}\n\n{markdown}\n")


def _builds(value: str) -> list[str]:
    builds = [b.strip() for b in value.split(",") if b.strip()]
    unknown = sorted(set(builds) - set(BUILDS))
    if unknown or not builds:
        raise argparse.ArgumentTypeError(f"builds are {', '.join(BUILDS)}, not {value!r}")
    return builds


def describe(env: dict[str, str], cluster: bool, args: argparse.Namespace) -> str:
    db = "SQLite files (a read-only replica connection per shard)"
    if env.get("SP_APP_POSTGRES_URL"):
        db = "PostgreSQL" + (" primary + streaming replica (throw-away cluster)" if cluster else "")
    parts = [
        f"shards: {env.get('SP_APP_SHARDS', '2')} on {db}",
        "cache/limiter/sessions: " + ("Redis" if env.get("SP_APP_REDIS_URL") else "in-process"),
        "broker: " + ("RabbitMQ" if env.get("SP_APP_AMQP_URL") else "MemoryBroker"),
        (
            f"email provider: {float(env['SP_APP_EMAIL_LATENCY']) * 1000:.0f} ms, "
            f"{float(env['SP_APP_EMAIL_FAILURE_RATE']):.0%} failures"
        ),
        f"rate limit: {env['SP_APP_RATE']} burst {env['SP_APP_BURST']} per client",
        (
            f"{args.clients} clients + a noisy one on {args.noisy} connections; "
            f"{args.duration:.0f} s per build in {args.rounds} round(s) after "
            f"{args.warmup:.0f} s of warm-up"
        ),
    ]
    return "; ".join(parts)


def _cleanup(env: dict[str, str]) -> None:
    """Delete a build's Redis keys, PostgreSQL databases, queues and exchange (its prefix
    is unique to this run)."""
    prefix = env["SP_APP_PREFIX"]
    if env.get("SP_APP_REDIS_URL"):
        import redis

        client = redis.Redis.from_url(env["SP_APP_REDIS_URL"])
        for key in client.scan_iter(f"{prefix}*", count=1000):
            client.delete(key)
        client.close()
    if env.get("SP_APP_AMQP_URL") and env["SP_APP_BUILD"] != "naive":
        from examples.app.services import ANALYTICS_GROUP, EMAIL_GROUP
        from scalepatterns.queue import RabbitMQBroker

        broker = RabbitMQBroker(env["SP_APP_AMQP_URL"])
        try:
            exchange = f"{prefix}.events"
            for group in (EMAIL_GROUP, ANALYTICS_GROUP):
                for queue in (f"{exchange}.{group}", f"{exchange}.{group}.dead"):
                    with contextlib.suppress(Exception):  # never declared: nothing to delete
                        broker.delete_queue(queue)
            with contextlib.suppress(Exception):
                broker.delete_exchange(exchange)
        finally:
            broker.close()
    if env.get("SP_APP_POSTGRES_URL"):
        import sqlalchemy as sa

        admin = sa.create_engine(env["SP_APP_POSTGRES_URL"], isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for i in range(int(env.get("SP_APP_SHARDS", "2"))):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{prefix}_s{i}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
