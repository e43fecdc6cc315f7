"""The monitor thread and task, and the example program."""

from __future__ import annotations

import asyncio
import threading

import pytest

from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Listeners
from scalepatterns.routing import LagSampled, ReadWriteRouter, ReplicaMonitor
from tests.support.examples import run_example
from tests.unit.routing.conftest import SqliteCluster


def test_the_monitor_thread_measures_until_stopped(cluster: SqliteCluster) -> None:
    engines = cluster.engines("primary", "replica1")
    listeners = Listeners()
    sampled = threading.Event()
    listeners.add(lambda event: sampled.set(), LagSampled)
    router = ReadWriteRouter(engines["primary"], [engines["replica1"]], listeners=listeners)
    with router.start_monitor(interval=0.01) as monitor:
        assert sampled.wait(timeout=30)
    assert monitor._thread is None  # stopped and joined
    assert router.status()[0].in_rotation
    with pytest.raises(ConfigurationError, match="interval"):
        ReplicaMonitor(router, interval=0)


def test_the_monitor_task_measures_until_cancelled(cluster: SqliteCluster) -> None:
    engines = cluster.async_engines("primary", "replica1")
    listeners = Listeners()
    samples: list[object] = []
    listeners.add(samples.append, LagSampled)
    router = ReadWriteRouter(engines["primary"], [engines["replica1"]], listeners=listeners)

    async def scenario() -> None:
        task = asyncio.create_task(router.amonitor(0.01))
        for _ in range(3000):
            if len(samples) >= 2:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for engine in engines.values():
            await engine.dispose()

    asyncio.run(scenario())
    assert len(samples) >= 2


def test_the_seed_style_example_shows_the_stale_read_and_the_fix() -> None:
    result = run_example("routing_read_replicas.py")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "'ada'   next GET: 'ada'   <- stale" in lines[1]
    assert "'Ada Lovelace'   next GET: 'Ada Lovelace'" in lines[3]
