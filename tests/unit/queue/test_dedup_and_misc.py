"""Dedup stores, configuration errors, exports and lazy imports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

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
from scalepatterns.queue.testing import wait_until


def memory_store(clock: FakeClock) -> MemoryDedupStore:
    return MemoryDedupStore(clock=clock)


def redis_store(clock: FakeClock) -> RedisDedupStore:
    return RedisDedupStore(fakeredis.FakeRedis(), prefix="t:")


def decoding_redis_store(clock: FakeClock) -> RedisDedupStore:
    """A client with decode_responses=True answers str, not bytes."""
    return RedisDedupStore(fakeredis.FakeRedis(decode_responses=True), prefix="t:")


@pytest.mark.parametrize(
    "make",
    [memory_store, redis_store, decoding_redis_store],
    ids=["memory", "redis", "redis-decode-responses"],
)
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
    store.claim("c", 100)  # over max_entries: expired marks go, then the oldest ("a")
    assert len(store) == 2
    assert store.claim("b", 100) is Claim.BUSY
    assert store.claim("c", 100) is Claim.BUSY
    assert store.claim("a", 1) is Claim.ACQUIRED  # its mark was the one dropped


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
    with pytest.raises(ConfigurationError, match="65535"):
        Worker(broker, "q", print, prefetch=70_000)  # AMQP's field is 16 bits
    with pytest.raises(TypeError):
        Worker(broker, "q", "not callable")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Worker(broker, "q", print, shutdown_timeout=-1)
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


def test_a_nack_in_a_batch_that_also_lost_messages_is_not_dropped() -> None:
    """One publish call: message "a" is nacked, then the connection drops before "b" is
    confirmed. Both are unconfirmed; the error must name both, or the Producer publishes
    only "b" again and reports "a" as sent."""
    from scalepatterns.queue import ConnectionLost
    from scalepatterns.queue.rabbitmq.confirms import Batch, ConfirmTracker, raise_for_outcome

    finished: list[bool] = []
    batch = Batch(["a", "b"], lambda: finished.append(True))
    tracker = ConfirmTracker()
    tracker.sent(batch, "a", "", 2)
    tracker.sent(batch, "b", "", 2)
    tracker.confirmed(1, multiple=False, nacked=True)
    tracker.fail_all("connection lost", lost=True)
    assert finished == [True]
    with pytest.raises(ConnectionLost) as caught:
        raise_for_outcome([batch], "q", "amqp://h")
    assert sorted(caught.value.unconfirmed) == ["a", "b"]


def test_redrive_that_fails_to_publish_keeps_the_dead_letter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dead letter being moved when publishing fails goes back to the dead-letter
    queue; before, it was neither acked nor requeued (lost on the memory broker, held
    unacked on RabbitMQ until the connection closed)."""
    from scalepatterns.queue import ConnectionLost, DeadLetters, QueueSpec
    from scalepatterns.queue.broker import Outgoing, Properties

    broker = MemoryBroker()
    broker.declare_queue(QueueSpec("jobs"))
    dead = DeadLetters(broker, "jobs")
    broker.publish([Outgoing("", dead.name, b'{"n": 1}', Properties(message_id="m1"))])
    assert dead.count() == 1

    def refuse(messages: object, *, timeout: float = 30.0) -> None:
        raise ConnectionLost("connection lost")

    monkeypatch.setattr(broker, "publish", refuse)
    with pytest.raises(ConnectionLost):
        dead.redrive()
    assert dead.count() == 1
    assert broker.depth("jobs") == 0
    broker.close()


def test_event_bus_runs_an_async_subscriber() -> None:
    """A handler may be an `async def` (as for `Worker`); the bus's group dispatcher
    called it without awaiting, so the event was acked and never handled."""
    import threading

    from scalepatterns.queue import EventBus

    broker = MemoryBroker()
    bus = EventBus(broker)
    seen: list[object] = []
    done = threading.Event()

    async def on_signup(message: object) -> None:
        seen.append(message.body)  # type: ignore[attr-defined]
        done.set()

    bus.subscribe("user.*", on_signup, group="mailer")
    with bus:
        bus.publish("user.signed_up", {"id": 7})
        assert done.wait(10)
    assert seen == [{"id": 7}]
    assert bus.workers()["mailer"].handled == 1
    broker.close()


def test_worker_start_can_be_retried_after_consume_failed() -> None:
    """`start()` whose `consume` raised (broker down) must leave the worker stopped: a
    second `start()` consumed nothing before (it saw the executor and returned), and the
    first one's thread pool was never shut down."""
    import threading

    from scalepatterns.queue import ConnectionLost

    class FlakyBroker(MemoryBroker):
        failures = 1

        def consume(self, queue: str, **kwargs: Any) -> Any:
            if self.failures:
                self.failures -= 1
                raise ConnectionLost("connection to the broker lost")
            return super().consume(queue, **kwargs)

    broker = FlakyBroker()
    done = threading.Event()
    worker = Worker(broker, "jobs", lambda message: done.set())
    with pytest.raises(ConnectionLost):
        worker.start()
    assert worker._executor is None
    worker.start()
    try:
        Producer(broker).publish("jobs", {"n": 1})
        assert done.wait(10)
    finally:
        assert worker.stop()
    assert worker.handled == 1
    broker.close()


def test_event_bus_subscribe_can_be_retried_after_declaring_failed() -> None:
    """A subscribe whose queue declaration failed must not leave a group without a worker
    (a retried subscribe then registered handlers that never ran)."""
    import threading

    from scalepatterns.queue import ConnectionLost, EventBus, QueueSpec

    class FlakyBroker(MemoryBroker):
        failures = 1

        def declare_queue(self, spec: QueueSpec) -> None:
            if self.failures and spec.name.endswith(".mailer"):
                self.failures -= 1
                raise ConnectionLost("connection to the broker lost")
            super().declare_queue(spec)

    broker = FlakyBroker()
    bus = EventBus(broker)
    done = threading.Event()
    with pytest.raises(ConnectionLost):
        bus.subscribe("user.*", lambda message: done.set(), group="mailer")
    bus.subscribe("user.*", lambda message: done.set(), group="mailer")
    with bus:
        bus.publish("user.signed_up", {"id": 7})
        assert done.wait(10)
    assert "mailer" in bus.workers()
    broker.close()


def test_rabbitmq_delay_queue_is_redeclared_before_its_lease_runs_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A delay queue has `x-expires`: RabbitMQ deletes it once it went unused (publishing
    does not count, only a redeclaration renews the lease) for that long, messages and all.
    The broker declared each delay queue once per process, so retries and delayed
    publishes of a long-running worker went to a deleted queue (unroutable)."""
    from types import SimpleNamespace

    from scalepatterns.queue.broker import delay_queue_arguments
    from scalepatterns.queue.rabbitmq import topology

    now = [1000.0]
    monkeypatch.setattr(topology, "time", SimpleNamespace(monotonic=lambda: now[0]))
    declared: list[str] = []
    link = SimpleNamespace(
        known_queues={},
        delays={},
        on_temp_channel=lambda name, steps, ok, fail: (declared.append(name), ok(None)),
    )
    names: list[str] = []

    def declare() -> None:
        topology.declare_delay(link, "jobs", 1.0, names.append, pytest.fail)  # type: ignore[arg-type]

    lease = delay_queue_arguments("jobs", 1000)["x-expires"] / 1000
    declare()
    declare()
    assert declared == ["jobs.delay.1000ms"]  # cached while the lease is fresh
    now[0] += lease / 2 + 1
    declare()
    assert declared == ["jobs.delay.1000ms"] * 2  # renewed before RabbitMQ would delete it
    assert names == ["jobs.delay.1000ms"] * 3


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_one_dedup_store_for_an_event_bus_hands_each_event_to_every_group(store: str) -> None:
    """Marks are per queue: the same event id fanned out to two groups is handled by both
    (keyed by id alone, the first group to finish marked it done for the other)."""
    import threading

    from scalepatterns.queue import EventBus

    dedup = MemoryDedupStore() if store == "memory" else RedisDedupStore(fakeredis.FakeRedis())
    broker = MemoryBroker()
    bus = EventBus(broker)
    seen: dict[str, list[object]] = {"email": [], "analytics": []}
    lock = threading.Lock()

    def handler(group: str) -> Callable[[Any], None]:
        def handle(message: Any) -> None:
            with lock:
                seen[group].append(message.body["n"])

        return handle

    for group in seen:
        bus.subscribe("user.*", handler(group), group=group, dedup=dedup)
    with bus:
        for n in range(10):
            bus.publish("user.signed_up", {"n": n})
        wait_until(lambda: sum(len(v) for v in seen.values()) == 20)
    assert {group: sorted(v) for group, v in seen.items()} == {
        "email": list(range(10)),
        "analytics": list(range(10)),
    }
    broker.close()


def test_redis_dedup_key_is_where_the_worker_keeps_its_mark() -> None:
    client = fakeredis.FakeRedis()
    store = RedisDedupStore(client, prefix="p:")
    assert store.claim("orders:m-1", 60) is Claim.ACQUIRED  # what a Worker of "orders" passes
    client.set(store.key("orders", "m-1"), b"done")  # the effect's transaction writes this
    assert store.claim("orders:m-1", 60) is Claim.DONE


def test_a_producer_publishes_an_id_less_message_again_after_a_lost_connection() -> None:
    """A broker names an id-less message "" in `unconfirmed`; matching it against None
    dropped it from the retry, and the next (empty) publish "succeeded"."""
    from scalepatterns.queue import ConnectionLost, QueueSpec
    from scalepatterns.queue.broker import Outgoing, Properties

    broker = MemoryBroker()
    broker.declare_queue(QueueSpec("q"))
    calls: list[int] = []
    publish = broker.publish

    def lose_once(messages: list[Outgoing], *, timeout: float = 30.0) -> None:
        calls.append(len(messages))
        if len(calls) == 1:
            raise ConnectionLost("connection lost", [""])
        publish(messages, timeout=timeout)

    broker.publish = lose_once  # type: ignore[method-assign]
    Producer(broker).send("q", [Outgoing("", "q", b"{}", Properties(message_id=None))])
    assert calls == [1, 1]  # published again, not dropped
    assert broker.depth("q") == 1
    broker.close()


def test_event_bus_refuses_other_worker_options_for_an_existing_group() -> None:
    from scalepatterns.queue import EventBus

    broker = MemoryBroker()
    bus = EventBus(broker)
    bus.subscribe("user.*", print, group="mailer", concurrency=2)
    bus.subscribe("order.*", print, group="mailer")  # no options: joins the group
    bus.subscribe("team.*", print, group="mailer", concurrency=2)  # the same: fine
    with pytest.raises(ConfigurationError) as info:
        bus.subscribe("invoice.*", print, group="mailer", concurrency=8)  # silently ignored
    assert info.value.parameter == "options"
    assert bus.workers()["mailer"].concurrency == 2
    broker.close()


TOO_BIG = "(406, 'PRECONDITION_FAILED - message size 200000000 is larger than max 134217728')"
NO_EXCHANGE = "(404, \"NOT_FOUND - no exchange 'gone' in vhost '/'\")"
UNKNOWN = "(406, 'PRECONDITION_FAILED - unknown delivery tag 7')"


@pytest.mark.parametrize(
    ("reason", "refused", "lost"),
    [
        (TOO_BIG, {"big"}, ["small", "elsewhere"]),
        (NO_EXCHANGE, {"elsewhere"}, ["small", "big"]),
        (UNKNOWN, {"small", "big", "elsewhere"}, []),
    ],
    ids=["too-big", "missing-exchange", "cause-unknown"],
)
def test_a_broker_channel_error_refuses_the_message_it_names(
    reason: str, refused: set[str], lost: list[str]
) -> None:
    """The one message the error is about is refused; the others waiting for a confirm
    are lost (a Producer publishes them again). When the error names no message, all are
    refused: publishing them again would only close the channel again."""
    from scalepatterns.queue.rabbitmq.confirms import Batch, ConfirmTracker, culprit

    batch = Batch(["small", "big", "elsewhere"])
    tracker = ConfirmTracker()
    tracker.sent(batch, "small", "", 10)
    tracker.sent(batch, "big", "", 200_000_000)
    tracker.sent(batch, "elsewhere", "gone", 10)
    named = culprit(reason)
    tracker.fail_all(reason, lost=named is not None, refused=named)
    assert set(batch.failed) == refused
    assert sorted(batch.lost) == sorted(lost)
    assert batch.done
    assert len(tracker) == 0


def test_an_event_bus_can_make_its_group_queues_quorum_queues() -> None:
    from scalepatterns.queue import EventBus

    broker = MemoryBroker()
    bus = EventBus(broker, queue_type="quorum")
    bus.subscribe("user.*", print, group="mailer")
    work = broker._queues[bus.queue_of("mailer")].arguments
    dead = broker._queues[f"{bus.queue_of('mailer')}.dead"].arguments
    assert (work["x-queue-type"], dead["x-queue-type"]) == ("quorum", "quorum")
    delayed = broker.declare_delay(bus.queue_of("mailer"), 1.0)
    assert broker._queues[delayed].arguments["x-queue-type"] == "quorum"
    assert broker._queues[delayed].arguments["x-dead-letter-strategy"] == "at-least-once"
    broker.close()
