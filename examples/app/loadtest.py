"""The load test: the naive and the patterned build, same servers, same workload, side by side.

    python -m examples.app.loadtest                 # 5 s warm-up + 25 s per build, embedded
    SP_APP_POSTGRES_URL=... SP_APP_REDIS_URL=... SP_APP_AMQP_URL=... \\
        python -m examples.app.loadtest --pg-cluster # the real servers, a real replica
    python -m examples.app.loadtest --quick         # a few seconds per build

Each build runs as its own uvicorn process; the driver (asyncio + httpx, in this process)
runs `--clients` well-behaved clients, each sending its next request when the last one
answered: a read-heavy Zipf workload (94% `GET /users/{id}` over a Zipf(1.1) popularity,
5% `PUT` of a profile, 1% signups), plus one noisy client hammering hot profiles as fast
as it can over `--noisy` connections (honouring `Retry-After` when refused). The
servers' own counters (`GET /stats`) give the database queries per request on primaries
and replicas, the cache hit ratio and the queue's figures, measured after an unmeasured
warm-up. It writes a Markdown table, a JSON file and a PNG chart.
"""

from __future__ import annotations

import argparse
import asyncio
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

from examples.app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


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
    http: httpx.AsyncClient, name: str, ids: list[int], stop: float, tally: Tally, seed: int
) -> None:
    rng = random.Random(seed)
    headers = {"X-Client-Id": name}
    i = 0
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


async def drive(
    base_url: str, ids: list[int], clients: int, noisy: int, duration: float
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
                _client(pool[c], f"client-{c}", ids, stop, tallies["clients"], c + 1)
                for c in range(clients)
            ),
            *(_noisy(h, ids, stop, tallies["noisy"]) for h in pool[clients:]),
        )
    finally:
        for h in pool:
            await h.aclose()
    return tallies


def _start_server(build: str, env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "examples.app", "serve", "--port", str(port)],
            cwd=ROOT,
            env={**env, "SP_APP_BUILD": build},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the {build} server exited: see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the {build} server did not start: see {log}")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_build(
    build: str, env: dict[str, str], ids: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    port = _free_port()
    log = Path(env["SP_APP_DATA_DIR"]) / f"{build}.log"
    server = _start_server(build, env, port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        if args.warmup > 0:  # the same unmeasured load first: a warm cache, open pools
            asyncio.run(drive(base, ids, args.clients, args.noisy, args.warmup))
        before = httpx.get(f"{base}/stats", timeout=10).json()
        started = time.perf_counter()
        tallies = asyncio.run(drive(base, ids, args.clients, args.noisy, args.duration))
        elapsed = time.perf_counter() - started
        # let the workers drain what the signups queued (bounded)
        drain_until = time.monotonic() + 10
        after = httpx.get(f"{base}/stats", timeout=10).json()
        while build == "patterned" and time.monotonic() < drain_until:
            emails = after["emails"]["sent"] + after["dead_letters"]
            signups = after["analytics"].get("user.signed_up", 0)
            if emails >= signups and after["requests"].get("requests", 0) > 0:
                break
            time.sleep(0.5)
            after = httpx.get(f"{base}/stats", timeout=10).json()
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
    return summarise(build, tallies, before, after, elapsed)


def summarise(
    build: str,
    tallies: dict[str, Tally],
    before: dict[str, Any],
    after: dict[str, Any],
    elapsed: float,
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
        "p99_ms": round(percentile(good.latencies, 0.99) * 1000, 1),
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
    ("p50 latency, well-behaved clients (ms)", "p50_ms", "{:.1f}"),
    ("p99 latency, well-behaved clients (ms)", "p99_ms", "{:.1f}"),
    ("primary DB queries per request", "primary_queries_per_request", "{:.3f}"),
    ("replica DB queries per request", "replica_queries_per_request", "{:.3f}"),
    ("cache hit ratio", "cache_hit_ratio", "{:.1%}"),
    ("share of requests from the noisy client", "noisy_share", "{:.1%}"),
    ("rate-limited share (429)", "rate_limited_share", "{:.1%}"),
    ("5xx and transport errors", "errors", "{}"),
    ("messages processed", "messages_processed", "{}"),
    ("messages retried", "messages_retried", "{}"),
    ("messages dead-lettered", "messages_dead_lettered", "{}"),
    ("welcome emails sent", "emails_sent", "{}"),
]


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| | naive | patterned |", "|---|---:|---:|"]
    for label, key, fmt in ROWS:
        cells = [fmt.format(results[b][key]) for b in ("naive", "patterned")]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def chart(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    builds = ["naive", "patterned"]
    colors = ["#b0b0b0", "#2a7ab9"]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    panels = [
        ("answered requests/s\n(well-behaved clients)", ["clients_per_second"], None),
        ("latency (ms)", ["p50_ms", "p99_ms"], ["p50", "p99"]),
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
            bars = ax.bar(xs, values, width, color=colors, alpha=1.0 - 0.35 * k)
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
    parser.add_argument("--duration", type=float, default=25.0, help="seconds of load per build")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=16, help="well-behaved clients")
    parser.add_argument("--noisy", type=int, default=6, help="connections of the noisy client")
    parser.add_argument("--quick", action="store_true", help="3 s per build, 2000 users")
    parser.add_argument(
        "--pg-cluster",
        action="store_true",
        help="start a throw-away PostgreSQL primary + streaming replica (tests/support)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.users, args.warmup = 3.0, 2000, 1.0

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
    try:
        from examples.app.db import Databases

        databases = Databases(Settings.from_env(env))
        databases.seed(args.users)
        if cluster is not None:
            cluster.wait_replayed()
        ids = zipf_ids(args.users, 200_000, 1.1, random.Random(7))
        results = {}
        for build in ("naive", "patterned"):
            print(f"{build}: {args.duration:.0f} s of load ...", flush=True)
            results[build] = run_build(build, env, ids, args)
        databases.drop()
        databases.dispose()
    finally:
        _cleanup(env)
        if cluster is not None:
            cluster.stop()
    where = describe(env, cluster is not None)
    markdown = table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "app_load.json").write_text(
        json.dumps({"where": where, "results": results}, indent=2)
    )
    chart(results, args.out / "app_load.png")
    print(f"\n{where}\n\n{markdown}")
    (args.out / "app_load.md").write_text(f"{where}\n\n{markdown}\n")


def describe(env: dict[str, str], cluster: bool) -> str:
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
    ]
    return "; ".join(parts)


def _cleanup(env: dict[str, str]) -> None:
    """Delete this run's Redis keys and PostgreSQL databases (the prefix is unique)."""
    prefix = env["SP_APP_PREFIX"]
    if env.get("SP_APP_REDIS_URL"):
        import redis

        client = redis.Redis.from_url(env["SP_APP_REDIS_URL"])
        for key in client.scan_iter(f"{prefix}*", count=1000):
            client.delete(key)
        client.close()
    if env.get("SP_APP_POSTGRES_URL"):
        import sqlalchemy as sa

        admin = sa.create_engine(env["SP_APP_POSTGRES_URL"], isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for i in range(int(env.get("SP_APP_SHARDS", "2"))):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{prefix}_s{i}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
