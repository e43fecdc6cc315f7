"""Dedup stores, configuration errors, exports and lazy imports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import fakeredis
import pytest

import scalepatterns
import scalepatterns.queue as queue_pkg
from scalepatterns import ConfigurationError, FakeClock, MissingDependency
from scalepatterns.queue import (
    Claim,
    MemoryBroker,
    MemoryDedupStore,
    Producer,
    RedisDedupStore,
    TopologyConflict,
    Worker,
)


def memory_store(clock: FakeClock) -> MemoryDedupStore:
    return MemoryDedupStore(clock=clock)


def redis_store(clock: FakeClock) -> RedisDedupStore:
    return RedisDedupStore(fakeredis.FakeRedis(), prefix="t:")


@pytest.mark.parametrize("make", [memory_store, redis_store], ids=["memory", "redis"])
def test_dedup_claim_complete_release(make: Callable[[FakeClock], object]) -> None:
    clock = FakeClock()
    store = make(clock)
    assert store.claim("m1", 10) is Claim.ACQUIRED  # type: ignore[attr-defined]
    assert store.claim("m1", 10) is Claim.BUSY  # type: ignore[attr-defined]
    store.release("m1")  # type: ignore[attr-defined]
    assert store.claim("m1", 10) is Claim.ACQUIRED  # type: ignore[attr-defined]
    store.complete("m1", 100)  # type: ignore[attr-defined]
    store.release("m1")  # a done mark is kept
    assert store.claim("m1", 10) is Claim.DONE  # type: ignore[attr-defined]


def test_memory_dedup_marks_expire() -> None:
    clock = FakeClock()
    store = MemoryDedupStore(clock=clock, max_entries=2)
    assert store.claim("a", 1) is Claim.ACQUIRED
    clock.advance(1.5)  # the in-progress mark of a crashed handler expired
    assert store.claim("a", 1) is Claim.ACQUIRED
    store.complete("a", 5)
    clock.advance(6)
    assert store.claim("a", 1) is Claim.ACQUIRED
    store.claim("b", 100)
    store.claim("c", 100)  # over max_entries: expired and oldest marks go
    assert len(store) <= 2


def test_redis_dedup_uses_set_nx_with_ttl() -> None:
    client = fakeredis.FakeRedis()
    store = RedisDedupStore(client, prefix="p:")
    store.claim("m", 2.5)
    assert client.get("p:m") == b"busy"
    assert 0 < client.pttl("p:m") <= 2500
    store.complete("m", 60)
    assert client.get("p:m") == b"done"
    assert client.pttl("p:m") > 2500
    with pytest.raises(ConfigurationError):
        RedisDedupStore(client, prefix="")


def test_worker_configuration_errors() -> None:
    broker = MemoryBroker()
    with pytest.raises(ConfigurationError):
        Worker(broker, "q", print, concurrency=0)
    with pytest.raises(ConfigurationError):
        Worker(broker, "q", print, prefetch=0)
    with pytest.raises(TypeError):
        Worker(broker, "q", "not callable")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Producer(broker, confirm_timeout=0)
    broker.close()


def test_memory_conflict_and_stop_are_idempotent() -> None:
    broker = MemoryBroker()
    worker = Worker(broker, "q", print)
    assert worker.stop() is True  # never started
    Producer(broker).publish("q", 1)
    from scalepatterns.queue import QueueSpec

    with pytest.raises(TopologyConflict) as caught:
        broker.declare_queue(QueueSpec("q", queue_type="quorum"))
    assert caught.value.argument == "x-queue-type"
    broker.close()


def test_exports_are_sorted_and_resolve() -> None:
    assert queue_pkg.__all__ == sorted(queue_pkg.__all__)
    for name in queue_pkg.__all__:
        assert getattr(queue_pkg, name) is not None
    for name in ("Producer", "Worker", "EventBus", "task", "MemoryBroker", "RabbitMQBroker"):
        assert getattr(scalepatterns, name) is getattr(queue_pkg, name)
    assert scalepatterns.__all__ == sorted(scalepatterns.__all__)
    for name in scalepatterns.__all__:
        assert getattr(scalepatterns, name) is not None


def test_importing_the_queue_block_loads_no_pika() -> None:
    code = (
        "import sys, scalepatterns, scalepatterns.queue; "
        "from scalepatterns import Producer, MemoryBroker; "
        "assert 'pika' not in sys.modules, 'pika imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rabbitmq_broker_without_pika_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pika", None)
    from scalepatterns.queue.rabbitmq import RabbitMQBroker

    with pytest.raises(MissingDependency) as caught:
        RabbitMQBroker()
    assert caught.value.extra == "rabbitmq"


def test_rabbitmq_url_password_is_redacted() -> None:
    from scalepatterns.queue.rabbitmq import RabbitMQBroker

    broker = RabbitMQBroker("amqp://user:s3cret@127.0.0.1:1/%2F")
    assert "s3cret" not in repr(broker)
    assert "***" in repr(broker)
    broker.close()


def test_run_stops_gracefully_on_sigterm() -> None:
    import os
    import signal
    import threading

    broker = MemoryBroker()
    handled: list[object] = []
    worker = Worker(broker, "q", handled.append)
    Producer(broker).publish_many("q", [1, 2, 3])

    def terminate_when_done() -> None:
        for _ in range(500):
            if len(handled) == 3:
                break
            threading.Event().wait(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=terminate_when_done, daemon=True).start()
    worker.run()  # returns on SIGTERM
    assert len(handled) == 3
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is restored
    assert worker.in_flight == 0
    broker.close()


def test_memory_delay_queues_follow_the_injected_clock() -> None:
    """Delays on a FakeClock: nothing moves until the clock does (no sleeping)."""
    import time as _time

    clock = FakeClock()
    broker = MemoryBroker(clock=clock)
    producer = Producer(broker, clock=clock)
    producer.publish("later", {"n": 1}, delay=30)
    _time.sleep(0.1)  # give the dispatcher every chance to move it early
    assert broker.depth("later") == 0
    clock.advance(29)
    _time.sleep(0.1)
    assert broker.depth("later") == 0
    clock.advance(1)
    for _ in range(500):
        if broker.depth("later") == 1:
            break
        _time.sleep(0.01)
    assert broker.depth("later") == 1
    broker.close()
