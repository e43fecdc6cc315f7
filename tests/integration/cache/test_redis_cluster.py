"""The cache on a RedisCluster client: a throw-away 3-node cluster on free ports."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scalepatterns.cache import Cache
from scalepatterns.cache.redis_backend import RedisBackend
from scalepatterns.cache.testing import BackendContract
from tests.support import services
from tests.support.servers import free_cluster_port, wait_for_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster_ports() -> Iterator[list[int]]:
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
    from redis.cluster import RedisCluster

    client = RedisCluster(host="127.0.0.1", port=cluster_ports[0])
    yield client
    client.close()


class TestRedisClusterBackend(BackendContract):
    @pytest.fixture
    def backend(self, cluster_client: object) -> RedisBackend:
        return RedisBackend(cluster_client)


def test_two_tier_cache_on_a_cluster_batches_tags_and_bumps(cluster_client: object) -> None:
    cache = Cache.two_tier(cluster_client, namespace="cl", local_ttl=5)
    loads: list[int] = []

    @cache.cached(tags=lambda x: [f"parity:{x % 2}"])
    def f(x: int) -> int:
        loads.append(x)
        return x * x

    try:
        assert [f(i) for i in range(10)] == [i * i for i in range(10)]
        assert f.get_many(list(range(12))) == [i * i for i in range(12)]  # keys on 3 nodes
        assert len(loads) == 12
        assert cache.invalidate_tags("parity:1") == 6
        cache.invalidate_namespace()
        f(1)
        assert len(loads) == 13
        assert cache.backend_errors == 0
    finally:
        cache.close()
