"""Fixtures for the real servers: Redis, PostgreSQL, RabbitMQ.

Each fixture checks that its server answers and yields its URL; a missing server skips
the test, or fails it under ``SCALEPATTERNS_REQUIRE_SERVICES=1`` (see tests/support/services.py).
URLs are overridable: SCALEPATTERNS_REDIS_URL, SCALEPATTERNS_POSTGRES_URL, SCALEPATTERNS_AMQP_URL.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import services
from tests.support.redis_sentinel import SentinelGroup
from tests.support.servers import RedisServer, free_cluster_port, wait_for_port


def _probe_redis() -> None:
    import redis

    client = redis.Redis.from_url(services.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def _probe_postgres() -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(services.POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    finally:
        engine.dispose()


def _probe_rabbitmq() -> None:
    import pika

    params = pika.URLParameters(services.AMQP_URL)
    params.socket_timeout = 3
    params.blocked_connection_timeout = 3
    params.connection_attempts = 1
    pika.BlockingConnection(params).close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the shared Redis; tests isolate themselves with unique key prefixes."""
    services.require_service("Redis", services.REDIS_URL, _probe_redis)
    return services.REDIS_URL


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL of the shared PostgreSQL database ``test``."""
    services.require_service("PostgreSQL", services.POSTGRES_URL, _probe_postgres)
    return services.POSTGRES_URL


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """AMQP URL of the shared RabbitMQ; tests use uniquely named queues."""
    services.require_service("RabbitMQ", services.AMQP_URL, _probe_rabbitmq)
    return services.AMQP_URL


@pytest.fixture
def unique_name() -> str:
    """A short unique name for keys, queues and tables created by one test."""
    return f"sp_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def throwaway_redis() -> Iterator[RedisServer]:
    """A private redis-server on a free port that the test may kill and restart."""
    server = RedisServer()
    try:
        server.start()
    except (RuntimeError, TimeoutError) as exc:
        if services.services_required():
            pytest.fail(f"could not start a throw-away redis-server: {exc}", pytrace=False)
        pytest.skip(f"could not start a throw-away redis-server: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sentinel_group() -> Iterator[SentinelGroup]:
    """A throw-away Redis master, replica and three sentinels, started once per module."""
    group = SentinelGroup()
    try:
        group.start()
    except (RuntimeError, TimeoutError) as exc:
        group.stop()
        if services.services_required():
            pytest.fail(f"could not start a throw-away Sentinel group: {exc}", pytrace=False)
        pytest.skip(f"could not start a throw-away Sentinel group: {exc}")
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture
def sentinel(sentinel_group: SentinelGroup) -> SentinelGroup:
    """The module's Sentinel group with a clean topology: a master and a healthy replica
    (a server an earlier test killed is back, as a replica)."""
    sentinel_group.restore()
    return sentinel_group


@pytest.fixture(scope="session")
def cluster_ports() -> Iterator[list[int]]:
    """A throw-away 3-node Redis Cluster on free ports, shared by the tests that need one."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        if services.services_required():
            pytest.fail("redis-server / redis-cli not on PATH")
        pytest.skip("redis-server / redis-cli not on PATH")
    root = Path(tempfile.mkdtemp(prefix="sp-cluster-"))
    ports: list[int] = []
    while len(ports) < 3:
        port = free_cluster_port()
        if all(abs(port - other) not in (0, 10000) for other in ports):
            ports.append(port)
    procs = []
    try:
        for port in ports:
            workdir = root / str(port)
            workdir.mkdir()
            procs.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(workdir),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in ports:
            wait_for_port(port)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in ports],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = subprocess.run(
                ["redis-cli", "-p", str(ports[0]), "cluster", "info"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout
            if "cluster_state:ok" in info:
                break
            time.sleep(0.1)
        yield ports
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cluster_client(cluster_ports: list[int]) -> Iterator[object]:
    """A `RedisCluster` client of the throw-away cluster."""
    from redis.cluster import RedisCluster

    client = RedisCluster(host="127.0.0.1", port=cluster_ports[0])
    yield client
    client.close()
