"""The broker contracts as pytest suites: subclass `BrokerContract` to test a broker, and
`AsyncBrokerContract` to test an async one.

```
class TestMyBroker(BrokerContract):
    @pytest.fixture
    def broker(self):
        broker = MyBroker(...)
        yield broker
        broker.close()


class TestMyAsyncBroker(AsyncBrokerContract):
    @pytest.fixture
    def make_broker(self):
        return lambda: MyAsyncBroker(...)  # a new one per test: each runs on its own loop
```

Every built-in broker runs them (`MemoryBroker` and `AsyncMemoryBroker` in the unit tests,
`RabbitMQBroker` and `AsyncRabbitMQBroker` against a real server in the integration
tests). Each test uses fresh, unique queue names and deletes what it declared.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest

from scalepatterns.events import EventRecorder, Listeners
from scalepatterns.queue.async_producer import AsyncProducer
from scalepatterns.queue.async_worker import AsyncWorker
from scalepatterns.queue.broker import (
    AsyncBroker,
    Broker,
    Delivery,
    Outgoing,
    Properties,
    QueueSpec,
    dead_letter_queue,
    delay_queue,
)
from scalepatterns.queue.bus import AsyncEventBus, EventBus
from scalepatterns.queue.deadletters import AsyncDeadLetters, DeadLetters
from scalepatterns.queue.dedup import MemoryDedupStore
from scalepatterns.queue.errors import PublishError, Reject, TopologyConflict
from scalepatterns.queue.events import MessageDuplicate, MessageRetried
from scalepatterns.queue.message import Message
from scalepatterns.queue.producer import Producer
from scalepatterns.queue.retry import RetryPolicy
from scalepatterns.queue.tasks import TaskRegistry, task, task_worker
from scalepatterns.queue.worker import Worker

__all__ = ["AsyncBrokerContract", "BrokerContract", "Names", "until", "wait_until"]


def wait_until(condition: Callable[[], object], timeout: float = 15.0, what: str = "") -> None:
    """Poll `condition` until true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.01)


async def until(condition: Callable[[], Any], timeout: float = 15.0, what: str = "") -> None:
    """`wait_until` for async tests: `condition` may return an awaitable."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(0.01)


class Names:
    """Unique queue and exchange names for one test, deleted afterwards."""

    def __init__(self) -> None:
        self.prefix = f"sp_test_{uuid.uuid4().hex[:10]}"
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, suffix: str = "q") -> str:
        name = f"{self.prefix}.{suffix}"
        self.queues.append(name)
        return name

    def exchange(self, suffix: str = "events") -> str:
        name = f"{self.prefix}.{suffix}"
        self.exchanges.append(name)
        return name

    def declared(self, extra: Sequence[str] = ()) -> list[str]:
        """Every queue a test may have declared: the queues, their dead-letter queues and
        their delay queues of the tiers the suites use."""
        names = [*self.queues, *extra]
        dead = [dead_letter_queue(name) for name in names]
        delays = [delay_queue(name, ms) for name in names for ms in _DELAY_TIERS]
        return [*names, *dead, *delays]

    def cleanup(self, broker: Broker, extra: Sequence[str] = ()) -> None:
        for name in self.declared(extra):
            _quietly(broker.delete_queue, name)
        for exchange in self.exchanges:
            _quietly(broker.delete_exchange, exchange)

    async def acleanup(self, broker: AsyncBroker) -> None:
        for name in self.declared():
            with contextlib.suppress(Exception):
                await broker.delete_queue(name)
        for exchange in self.exchanges:
            with contextlib.suppress(Exception):
                await broker.delete_exchange(exchange)


# Delay tiers (ms) the suites' retries and delays use, deleted after each test.
_DELAY_TIERS = (50, 100, 200, 300, 400, 1000, 5000)


def _quietly(fn: Callable[[str], None], name: str) -> None:
    """Best-effort cleanup: the test's verdict matters more than a failed delete."""
    with contextlib.suppress(Exception):
        fn(name)


class _Collector:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[Message] = []

    def __call__(self, message: Message) -> None:
        with self.lock:
            self.messages.append(message)

    def __len__(self) -> int:
        return len(self.messages)


class BrokerContract:
    """The behaviour every broker must show. Subclasses provide the `broker` fixture."""

    @pytest.fixture
    def broker(self) -> Iterator[Broker]:
        raise NotImplementedError("a BrokerContract subclass provides the broker fixture")

    @pytest.fixture
    def names(self, broker: Broker) -> Iterator[Names]:
        names = Names()
        yield names
        names.cleanup(broker)

    # -- the broker itself ------------------------------------------------------------

    def _consume(
        self, broker: Broker, queue: str, prefetch: int = 10
    ) -> tuple[list[Delivery], Any]:
        received: list[Delivery] = []
        lock = threading.Lock()

        def on_delivery(delivery: Delivery) -> None:
            with lock:
                received.append(delivery)

        return received, broker.consume(queue, prefetch=prefetch, on_delivery=on_delivery)

    def test_publish_consume_ack(self, broker: Broker, names: Names) -> None:
        queue = names.queue()
        broker.declare_queue(QueueSpec(queue))
        props = Properties(message_id="m1", type="t", content_type="text/plain", headers={"k": 1})
        broker.publish([Outgoing("", queue, b"hello", props)], timeout=10)
        assert broker.depth(queue) == 1
        received, sub = self._consume(broker, queue)
        wait_until(lambda: len(received) == 1, what="a delivery")
        got = received[0]
        assert (got.body, got.properties.message_id, got.properties.type) == (b"hello", "m1", "t")
        assert got.properties.headers["k"] == 1
        assert not got.redelivered
        got.ack()
        sub.close()
        assert broker.depth(queue) == 0

    def test_unacked_messages_are_redelivered_when_a_consumer_closes(
        self, broker: Broker, names: Names
    ) -> None:
        queue = names.queue()
        broker.declare_queue(QueueSpec(queue))
        outs = [
            Outgoing("", queue, str(i).encode(), Properties(message_id=str(i))) for i in range(5)
        ]
        broker.publish(outs, timeout=10)
        received, sub = self._consume(broker, queue, prefetch=3)
        wait_until(lambda: len(received) == 3, what="three deliveries (prefetch 3)")
        time.sleep(0.1)
        assert len(received) == 3  # prefetch bounds what is in flight
        received[0].ack()
        sub.close()
        again, sub2 = self._consume(broker, queue, prefetch=10)
        wait_until(lambda: len(again) == 4, what="the four unacked/unsent messages")
        assert sorted(d.body for d in again) == [b"1", b"2", b"3", b"4"]
        # 1 and 2 were delivered and never settled (3 may have been sent after the ack)
        assert {b"1", b"2"} <= {d.body for d in again if d.redelivered}
        assert b"4" not in {d.body for d in again if d.redelivered}
        for delivery in again:
            delivery.ack()
        sub2.close()

    def test_reject_without_requeue_dead_letters(self, broker: Broker, names: Names) -> None:
        queue = names.queue()
        broker.declare_queue(QueueSpec(queue))
        broker.publish([Outgoing("", queue, b"x", Properties(message_id="x"))], timeout=10)
        received, sub = self._consume(broker, queue)
        wait_until(lambda: received, what="a delivery")
        received[0].reject(requeue=False)
        wait_until(lambda: broker.depth(f"{queue}.dead") == 1, what="the dead letter")
        sub.close()

    def test_unroutable_message_raises_and_others_are_stored(
        self, broker: Broker, names: Names
    ) -> None:
        queue = names.queue()
        broker.declare_queue(QueueSpec(queue))
        missing = names.queue("missing")
        outs = [
            Outgoing("", queue, b"ok", Properties(message_id="ok")),
            Outgoing("", missing, b"lost", Properties(message_id="lost")),
        ]
        with pytest.raises(PublishError) as caught:
            broker.publish(outs, timeout=10)
        assert list(caught.value.failed) == ["lost"]
        assert broker.depth(queue) == 1

    def test_conflicting_declaration_names_the_argument(self, broker: Broker, names: Names) -> None:
        queue = names.queue()
        broker.declare_queue(QueueSpec(queue))
        broker.declare_queue(QueueSpec(queue))  # idempotent
        with pytest.raises(TopologyConflict) as caught:
            broker.declare_queue(QueueSpec(queue, max_priority=5))
        assert caught.value.argument == "x-max-priority"
        assert queue in str(caught.value)
        # the broker is still usable afterwards
        broker.publish([Outgoing("", queue, b"x", Properties(message_id="x"))], timeout=10)
        assert broker.depth(queue) == 1

    def test_delay_queue_holds_then_delivers(self, broker: Broker, names: Names) -> None:
        queue = names.queue()
        broker.declare_queue(QueueSpec(queue))
        delayed = broker.declare_delay(queue, 0.3)
        broker.publish([Outgoing("", delayed, b"later", Properties(message_id="d"))], timeout=10)
        assert broker.depth(queue) == 0
        wait_until(lambda: broker.depth(queue) == 1, what="the delayed message")
        delivery = broker.get(queue)
        assert delivery is not None
        assert delivery.body == b"later"
        assert delivery.properties.message_id == "d"
        delivery.ack()
        assert broker.get(queue) is None

    def test_topic_exchange_routes_by_pattern(self, broker: Broker, names: Names) -> None:
        exchange = names.exchange()
        users, everything = names.queue("users"), names.queue("all")
        for queue in (users, everything):
            broker.declare_queue(QueueSpec(queue))
        broker.bind(exchange, users, "user.*")
        broker.bind(exchange, everything, "#")
        outs = [
            Outgoing(exchange, key, key.encode(), Properties(message_id=key), mandatory=False)
            for key in ("user.created", "user.profile.updated", "order.paid")
        ]
        broker.publish(outs, timeout=10)
        assert (broker.depth(users), broker.depth(everything)) == (1, 3)

    def test_priorities(self, broker: Broker, names: Names) -> None:
        queue = names.queue()
        broker.declare_queue(QueueSpec(queue, max_priority=5))
        outs = [
            Outgoing("", queue, str(p).encode(), Properties(message_id=str(p), priority=p))
            for p in (1, 5, 3)
        ]
        broker.publish(outs, timeout=10)
        bodies = []
        while (delivery := broker.get(queue)) is not None:
            bodies.append(delivery.body)
            delivery.ack()
        assert bodies == [b"5", b"3", b"1"]

    # -- producer and worker ------------------------------------------------------------

    def test_worker_handles_every_message_once(self, broker: Broker, names: Names) -> None:
        queue = names.queue()
        seen = _Collector()
        producer = Producer(broker)
        with Worker(broker, queue, seen, concurrency=4):
            ids = producer.publish_many(queue, [{"n": i} for i in range(200)])
            single = producer.publish(
                queue, {"n": 200}, type="job", headers={"tenant": "a", "traceparent": "00-ab-cd-01"}
            )
            wait_until(lambda: len(seen) == 201, what="201 handled messages")
        assert sorted(m.body["n"] for m in seen.messages) == list(range(201))
        assert {m.id for m in seen.messages} == {*ids, single}
        last = next(m for m in seen.messages if m.id == single)
        assert (last.type, last.headers, last.attempt) == ("job", {"tenant": "a"}, 1)
        assert last.trace == {"traceparent": "00-ab-cd-01"}
        assert last.created_at is not None
        assert broker.depth(queue) == 0

    def test_transient_failures_are_retried_with_backoff(
        self, broker: Broker, names: Names
    ) -> None:
        queue = names.queue()
        attempts: Counter[int] = Counter()
        times: dict[int, list[float]] = {}
        done = _Collector()
        lock = threading.Lock()

        def flaky(message: Message) -> None:
            n = message.body["n"]
            with lock:
                attempts[n] += 1
                times.setdefault(n, []).append(time.monotonic())
                failing = attempts[n] <= (n % 3 == 0) + (n % 9 == 0)  # a third fail, some twice
            if failing:
                raise ConnectionError(f"transient failure of {n}")
            done(message)

        recorder = EventRecorder()
        listeners = Listeners()
        listeners.add(recorder)
        policy = RetryPolicy(attempts=4, wait=lambda attempt: 0.2 * attempt)
        with Worker(broker, queue, flaky, retry=policy, concurrency=4, listeners=listeners):
            Producer(broker).publish_many(queue, [{"n": i} for i in range(30)])
            wait_until(lambda: len(done) == 30, what="every message to succeed")
        assert sorted(m.body["n"] for m in done.messages) == list(range(30))
        assert {n: c for n, c in attempts.items() if c > 1} == {
            n: 1 + (n % 3 == 0) + (n % 9 == 0) for n in range(30) if n % 3 == 0
        }
        retried = recorder.of_type(MessageRetried)
        assert len(retried) == sum(c - 1 for c in attempts.values())
        assert sorted({e.delay for e in retried}) == [0.2, 0.4]
        for n, stamps in times.items():  # each retry came back no earlier than its backoff
            for index, (a, b) in enumerate(itertools.pairwise(stamps)):
                assert b - a >= 0.2 * (index + 1) * 0.95, (n, stamps)
        assert {m.attempt for m in done.messages if m.body["n"] == 9} == {3}

    def test_poison_and_undecodable_messages_are_dead_lettered(
        self, broker: Broker, names: Names
    ) -> None:
        queue = names.queue()

        def handler(message: Message) -> None:
            if message.body.get("poison"):
                raise ValueError("cannot process this")
            if message.body.get("reject"):
                raise Reject("bad input")

        policy = RetryPolicy(attempts=3, wait=lambda attempt: 0.05)
        with Worker(broker, queue, handler, retry=policy):
            producer = Producer(broker)
            poison = producer.publish(queue, {"poison": True})
            rejected = producer.publish(queue, {"reject": True})
            broker.publish(
                [
                    Outgoing(
                        "",
                        queue,
                        b"{not json",
                        Properties(message_id="bad", content_type="application/json"),
                    )
                ],
                timeout=10,
            )
            dead = DeadLetters(broker, queue)
            wait_until(lambda: dead.count() == 3, what="three dead letters")
        letters = {d.id: d for d in dead.inspect()}
        assert set(letters) == {poison, rejected, "bad"}
        assert (letters[poison].error_type, letters[poison].attempts) == ("ValueError", 3)
        assert letters[poison].error_message == "cannot process this"
        assert (letters[rejected].error_type, letters[rejected].attempts) == ("Reject", 1)
        assert (letters["bad"].error_type, letters["bad"].attempts) == ("SerializationError", 1)
        assert letters["bad"].raw == b"{not json"
        assert dead.count() == 3  # inspecting does not remove

        # re-drive the poison message to a handler that now works
        fixed = _Collector()
        with Worker(broker, queue, fixed):
            assert dead.redrive(where=lambda d: d.id == poison) == 1
            wait_until(lambda: len(fixed) == 1, what="the re-driven message")
        assert fixed.messages[0].id == poison
        assert fixed.messages[0].attempt == 1
        assert dead.count() == 2
        assert dead.purge() == 2
        assert dead.count() == 0

    def test_dedup_store_absorbs_duplicates(self, broker: Broker, names: Names) -> None:
        queue = names.queue()
        seen = _Collector()
        recorder = EventRecorder()
        listeners = Listeners()
        listeners.add(recorder)
        store = MemoryDedupStore()
        with Worker(broker, queue, seen, dedup=store, listeners=listeners):
            producer = Producer(broker)
            for _ in range(3):
                producer.publish(queue, {"order": 1}, message_id="order-1")
            producer.publish(queue, {"order": 2}, message_id="order-2")
            wait_until(lambda: len(seen) == 2 and len(recorder.of_type(MessageDuplicate)) == 2)
        assert sorted(m.id for m in seen.messages) == ["order-1", "order-2"]

    def test_a_crash_mid_handler_leads_to_a_retry_not_a_drop(
        self, broker: Broker, names: Names
    ) -> None:
        queue = names.queue()
        store = MemoryDedupStore()
        store.claim("job-1", ttl=0.3)  # a worker claimed it, then died mid-handler
        seen = _Collector()
        with Worker(broker, queue, seen, dedup=store, in_progress_ttl=0.3):
            Producer(broker).publish(queue, {"job": 1}, message_id="job-1")
            wait_until(lambda: len(seen) == 1, what="the retried message")
        assert seen.messages[0].id == "job-1"

    def test_graceful_shutdown_finishes_or_requeues(self, broker: Broker, names: Names) -> None:
        queue = names.queue()
        release = threading.Event()
        started = _Collector()
        finished = _Collector()

        def slow(message: Message) -> None:
            started(message)
            if message.body["n"] == 0:
                time.sleep(0.2)
            else:
                release.wait(10)
            finished(message)

        worker = Worker(broker, queue, slow, concurrency=2, prefetch=2).start()
        Producer(broker).publish_many(queue, [{"n": 0}, {"n": 1}])
        wait_until(lambda: len(started) == 2, what="both handlers to start")
        assert worker.stop(timeout=0.6) is False  # n=0 finished, n=1 did not
        release.set()
        assert [m.body["n"] for m in finished.messages][:1] == [0]
        # the unfinished one went back to the queue and is handled by the next worker
        again = _Collector()
        with Worker(broker, queue, again):
            wait_until(lambda: len(again) == 1, what="the requeued message")
        assert again.messages[0].body == {"n": 1}
        assert again.messages[0].redelivered

    def test_async_handler(self, broker: Broker, names: Names) -> None:
        queue = names.queue()
        seen = _Collector()

        async def handler(message: Message) -> None:
            seen(message)

        with Worker(broker, queue, handler):
            Producer(broker).publish_many(queue, [1, 2, 3])
            wait_until(lambda: len(seen) == 3)
        assert sorted(m.body for m in seen.messages) == [1, 2, 3]

    def test_delayed_publish(self, broker: Broker, names: Names) -> None:
        queue = names.queue()
        seen = _Collector()
        with Worker(broker, queue, seen):
            sent = time.monotonic()
            Producer(broker).publish(queue, {"late": True}, delay=0.3)
            wait_until(lambda: len(seen) == 1)
            assert time.monotonic() - sent >= 0.3 * 0.95

    # -- tasks and events ---------------------------------------------------------------

    def test_tasks_run_by_name(self, broker: Broker, names: Names) -> None:
        queue = names.queue()
        registry = TaskRegistry()
        results: list[tuple[int, str]] = []

        @task(broker, queue=queue, registry=registry, name="reports.build")
        def build(user_id: int, fmt: str = "pdf") -> None:
            results.append((user_id, fmt))

        build.delay(1)
        build.apply_async([2], {"fmt": "csv"})
        build.apply_async([3], delay=0.2)
        Producer(broker).publish(queue, {"args": []}, type="reports.unknown")
        with task_worker(broker, queue, registry=registry):
            wait_until(lambda: len(results) == 3, what="three task runs")
            wait_until(lambda: DeadLetters(broker, queue).count() == 1, what="the unknown task")
        assert sorted(results) == [(1, "pdf"), (2, "csv"), (3, "pdf")]
        dead = DeadLetters(broker, queue).inspect()
        assert dead[0].type == "reports.unknown"
        assert dead[0].error_type == "Reject"

    def test_event_bus_fans_out_to_groups(self, broker: Broker, names: Names) -> None:
        exchange = names.exchange()
        names.queues += [f"{exchange}.email", f"{exchange}.analytics"]
        email, analytics_a, analytics_b = _Collector(), _Collector(), _Collector()
        failed_once: set[str] = set()

        def flaky_email(message: Message) -> None:
            if message.body["user"] % 5 == 0 and message.id not in failed_once:
                failed_once.add(message.id)
                raise ConnectionError("SMTP busy")  # retried through a delay queue
            email(message)

        bus_a = EventBus(broker, exchange=exchange, retry=RetryPolicy(wait=lambda attempt: 0.05))
        bus_b = EventBus(broker, exchange=exchange)  # a second process of "analytics"
        bus_a.subscribe("user.signed_up", flaky_email, group="email")
        bus_a.subscribe("user.*", analytics_a, group="analytics")
        bus_b.subscribe("user.*", analytics_b, group="analytics")
        with bus_a, bus_b:
            for i in range(20):
                bus_a.publish("user.signed_up", {"user": i})
            bus_a.publish("user.deleted", {"user": 99})
            bus_a.publish("order.paid", {"order": 1})  # no subscriber: dropped, no error
            wait_until(lambda: len(email) == 20 and len(analytics_a) + len(analytics_b) == 21)
        assert sorted(m.body["user"] for m in email.messages) == list(range(20))
        shared = sorted(m.body["user"] for m in analytics_a.messages + analytics_b.messages)
        assert shared == [*range(20), 99]
        assert {m.type for m in email.messages} == {"user.signed_up"}
        assert len(failed_once) == 4
        assert {m.attempt for m in email.messages if m.id in failed_once} == {2}


Scenario = Callable[[AsyncBroker, Names], Awaitable[None]]


class AsyncBrokerContract:
    """The behaviour every `AsyncBroker` must show, through the async API (`AsyncProducer`,
    `AsyncWorker`, `AsyncEventBus`, `AsyncDeadLetters`, async tasks).

    Subclasses provide `make_broker`: a fixture returning a function that makes a new,
    unused broker. Each test runs on an event loop of its own, then deletes its queues
    and closes the broker.
    """

    @pytest.fixture
    def make_broker(self) -> Callable[[], AsyncBroker]:
        raise NotImplementedError("an AsyncBrokerContract subclass provides make_broker")

    @pytest.fixture
    def run(self, make_broker: Callable[[], AsyncBroker]) -> Callable[[Scenario], None]:
        def run(scenario: Scenario) -> None:
            async def main() -> None:
                broker = make_broker()
                names = Names()
                try:
                    await asyncio.wait_for(scenario(broker, names), 60)
                finally:
                    await names.acleanup(broker)
                    await broker.close()

            asyncio.run(main())

        return run

    # -- the broker itself ------------------------------------------------------------

    def test_publish_consume_ack(self, run: Callable[[Scenario], None]) -> None:
        async def scenario(broker: AsyncBroker, names: Names) -> None:
            queue = names.queue()
            await broker.declare_queue(QueueSpec(queue))
            props = Properties(message_id="m1", type="t", headers={"k": 1})
            await broker.publish([Outgoing("", queue, b"hello", props)], timeout=10)
            assert await broker.depth(queue) == 1
            received: list[Delivery] = []
            sub = await broker.consume(queue, prefetch=10, on_delivery=received.append)
            await until(lambda: received, what="a delivery")
            got = received[0]
            assert (got.body, got.properties.message_id, got.properties.type) == (
                b"hello",
                "m1",
                "t",
            )
            assert got.properties.headers["k"] == 1
            assert not got.redelivered
            got.ack()
            await sub.close()
            await until(lambda: _is(broker.depth(queue), 0), what="an empty queue")

        run(scenario)

    def test_unacked_messages_are_redelivered_when_a_consumer_closes(
        self, run: Callable[[Scenario], None]
    ) -> None:
        async def scenario(broker: AsyncBroker, names: Names) -> None:
            queue = names.queue()
            await broker.declare_queue(QueueSpec(queue))
            outs = [Outgoing("", queue, b"%d" % i, Properties(message_id=str(i))) for i in range(5)]
            await broker.publish(outs, timeout=10)
            received: list[Delivery] = []
            sub = await broker.consume(queue, prefetch=3, on_delivery=received.append)
            await until(lambda: len(received) == 3, what="three deliveries (prefetch 3)")
            await asyncio.sleep(0.1)
            assert len(received) == 3  # prefetch bounds what is in flight
            received[0].ack()
            await sub.close()
            again: list[Delivery] = []
            sub2 = await broker.consume(queue, prefetch=10, on_delivery=again.append)
            await until(lambda: len(again) == 4, what="the four unacked/unsent messages")
            assert sorted(d.body for d in again) == [b"1", b"2", b"3", b"4"]
            assert {b"1", b"2"} <= {d.body for d in again if d.redelivered}
            for delivery in again:
                delivery.ack()
            await sub2.close()

        run(scenario)

    def test_unroutable_message_raises_and_others_are_stored(
        self, run: Callable[[Scenario], None]
    ) -> None:
        async def scenario(broker: AsyncBroker, names: Names) -> None:
            queue = names.queue()
            await broker.declare_queue(QueueSpec(queue))
            outs = [
                Outgoing("", queue, b"ok", Properties(message_id="ok")),
                Outgoing("", names.queue("missing"), b"lost", Properties(message_id="lost")),
            ]
            with pytest.raises(PublishError) as caught:
                await broker.publish(outs, timeout=10)
            assert list(caught.value.failed) == ["lost"]
            assert await broker.depth(queue) == 1

        run(scenario)

    def test_conflicting_declaration_names_the_queue_and_argument(
        self, run: Callable[[Scenario], None]
    ) -> None:
        async def scenario(broker: AsyncBroker, names: Names) -> None:
            queue = names.queue()
            await broker.declare_queue(QueueSpec(queue))
            await broker.declare_queue(QueueSpec(queue))  # idempotent
            with pytest.raises(TopologyConflict) as caught:
                await broker.declare_queue(QueueSpec(queue, queue_type="quorum"))
            assert (caught.value.name, caught.value.argument) == (queue, "x-queue-type")
            await broker.publish(
                [Outgoing("", queue, b"x", Properties(message_id="x"))], timeout=10
            )
            assert await broker.depth(queue) == 1  # still usable

        run(scenario)

    def test_delay_queue_holds_then_delivers(self, run: Callable[[Scenario], None]) -> None:
        async def scenario(broker: AsyncBroker, names: Names) -> None:
            queue = names.queue()
            await broker.declare_queue(QueueSpec(queue))
            delayed = await broker.declare_delay(queue, 0.3)
            await broker.publish(
                [Outgoing("", delayed, b"later", Properties(message_id="d"))], timeout=10
            )
            assert await broker.depth(queue) == 0
            await until(lambda: _is(broker.depth(queue), 1), what="the delayed message")
            delivery = await broker.get(queue)
            assert delivery is not None
            assert (delivery.body, delivery.properties.message_id) == (b"later", "d")
            delivery.ack()
            assert await broker.get(queue) is None

        run(scenario)

    def test_a_cancelled_publish_leaves_the_broker_usable(
        self, run: Callable[[Scenario], None]
    ) -> None:
        async def scenario(broker: AsyncBroker, names: Names) -> None:
            queue = names.queue()
            producer = AsyncProducer(broker)
            await producer.publish(queue, "first")
            publishing = asyncio.ensure_future(producer.publish_many(queue, range(5000)))
            await asyncio.sleep(0)
            publishing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publishing
            last = await producer.publish(queue, "last")  # the connection still works
            await until(lambda: _at_least(broker.depth(queue), 2), what="the last message")
            seen = []
            while (delivery := await broker.get(queue)) is not None:
                seen.append(delivery.properties.message_id)
                delivery.ack()
            assert last in seen

        run(scenario)

    # -- producer and worker ------------------------------------------------------------

    def test_worker_handles_every_message_once(self, run: Callable[[Scenario], None]) -> None:
        async def scenario(broker: AsyncBroker, names: Names) -> None:
            queue = names.queue()
            seen: list[Message] = []

            async def handler(message: Message) -> None:
                await asyncio.sleep(0)
                seen.append(message)

            producer = AsyncProducer(broker)
            async with AsyncWorker(broker, queue, handler, concurrency=4) as worker:
                ids = await producer.publish_many(queue, [{"n": i} for i in range(200)])
                single = await producer.publish(
                    queue,
                    {"n": 200},
                    type="job",
                    headers={"tenant": "a", "traceparent": "00-ab-cd-01"},
                )
                await until(lambda: len(seen) == 201, what="201 handled messages")
            assert sorted(m.body["n"] for m in seen) == list(range(201))
            assert {m.id for m in seen} == {*ids, single}
            last = next(m for m in seen if m.id == single)
            assert (last.type, last.headers, last.attempt) == ("job", {"tenant": "a"}, 1)
            assert last.trace == {"traceparent": "00-ab-cd-01"}
            assert (worker.handled, worker.failed) == (201, 0)
            assert await broker.depth(queue) == 0

        run(scenario)

    def test_concurrency_bounds_the_handlers_running_at_once(
        self, run: Callable[[Scenario], None]
    ) -> None:
        async def scenario(broker: AsyncBroker, names: Names) -> None:
            queue = names.queue()
            running = [0]
            peak = [0]
            done: list[int] = []

            async def handler(message: Message) -> None:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                await asyncio.sleep(0.02)
                running[0] -= 1
                done.append(message.body)

            async with AsyncWorker(broker, queue, handler, concurrency=3, prefetch=20):
                await AsyncProducer(broker).publish_many(queue, range(30))
                await until(lambda: len(done) == 30, what="30 handled messages")
            assert peak[0] == 3

        run(scenario)

    def test_transient_failures_are_retried_with_backoff(
        self, run: Callable[[Scenario], None]
    ) -> None:
        async def scenario(broker: AsyncBroker, names: Names) -> None:
            queue = names.queue()
            attempts: Counter[int] = Counter()
            times: dict[int, list[float]] = {}
            done: list[Message] = []

            async def flaky(message: Message) -> None:
                n = message.body["n"]
                attempts[n] += 1
                times.setdefault(n, []).append(time.monotonic())
                if attempts[n] <= (n % 3 == 0) + (n % 9 == 0):  # a third fail, some twice
                    raise ConnectionError(f"transient failure of {n}")
                done.append(message)

            recorder = EventRecorder()
            listeners = Listeners()
            listeners.add(recorder)
            policy = RetryPolicy(attempts=4, wait=lambda attempt: 0.2 * attempt)
            async with AsyncWorker(broker, queue, flaky, retry=policy, listeners=listeners):
                await AsyncProducer(broker).publish_many(queue, [{"n": i} for i in range(30)])
                await until(lambda: len(done) == 30, what="every message to succeed")
            assert {n: c for n, c in attempts.items() if c > 1} == {
                n: 1 + (n % 3 == 0) + (n % 9 == 0) for n in range(30) if n % 3 == 0
            }
            retried = recorder.of_type(MessageRetried)
            assert sorted({e.delay for e in retried}) == [0.2, 0.4]
            for n, stamps in times.items():  # each retry came back no earlier than its backoff
                for index, (a, b) in enumerate(itertools.pairwise(stamps)):
                    assert b - a >= 0.2 * (index + 1) * 0.95, (n, stamps)
            assert {m.attempt for m in done if m.body["n"] == 9} == {3}

        run(scenario)

    def test_poison_and_undecodable_messages_are_dead_lettered(
        self, run: Callable[[Scenario], None]
    ) -> None:
        async def scenario(broker: AsyncBroker, names: Names) -> None:
            queue = names.queue()

            async def handler(message: Message) -> None:
                if message.body.get("poison"):
                    raise ValueError("cannot process this")
                if message.body.get("reject"):
                    raise Reject("bad input")

            policy = RetryPolicy(attempts=3, wait=lambda attempt: 0.05)
            producer = AsyncProducer(broker)
            dead = AsyncDeadLetters(broker, queue)
            async with AsyncWorker(broker, queue, handler, retry=policy):
                poison = await producer.publish(queue, {"poison": True})
                rejected = await producer.publish(queue, {"reject": True})
                bad = Properties(message_id="bad", content_type="application/json")
                await broker.publish([Outgoing("", queue, b"{not json", bad)], timeout=10)
                await until(lambda: _is(dead.count(), 3), what="three dead letters")
            letters = {d.id: d for d in await dead.inspect()}
            assert set(letters) == {poison, rejected, "bad"}
            assert (letters[poison].error_type, letters[poison].attempts) == ("ValueError", 3)
            assert (letters[rejected].error_type, letters[rejected].attempts) == ("Reject", 1)
            assert (letters["bad"].error_type, letters["bad"].raw) == (
                "SerializationError",
                b"{not json",
            )
            assert await dead.count() == 3  # inspecting does not remove
            fixed: list[Message] = []
            async with AsyncWorker(broker, queue, _appender(fixed)):
                assert await dead.redrive(where=lambda d: d.id == poison) == 1
                await until(lambda: fixed, what="the re-driven message")
            assert (fixed[0].id, fixed[0].attempt) == (poison, 1)
            assert await dead.purge() == 2
            assert await dead.count() == 0

        run(scenario)

    def test_dedup_store_absorbs_duplicates(self, run: Callable[[Scenario], None]) -> None:
        async def scenario(broker: AsyncBroker, names: Names) -> None:
            queue = names.queue()
            seen: list[Message] = []
            recorder = EventRecorder()
            listeners = Listeners()
            listeners.add(recorder)
            worker = AsyncWorker(
                broker, queue, _appender(seen), dedup=MemoryDedupStore(), listeners=listeners
            )
            async with worker:
                producer = AsyncProducer(broker)
                for _ in range(3):
                    await producer.publish(queue, {"order": 1}, message_id="order-1")
                await producer.publish(queue, {"order": 2}, message_id="order-2")
                await until(lambda: len(seen) == 2 and len(recorder.of_type(MessageDuplicate)) == 2)
            assert sorted(m.id for m in seen) == ["order-1", "order-2"]

        run(scenario)

    def test_graceful_stop_finishes_running_handlers_and_gives_back_the_rest(
        self, run: Callable[[Scenario], None]
    ) -> None:
        async def scenario(broker: AsyncBroker, names: Names) -> None:
            queue = names.queue()
            started: list[int] = []
            finished: list[int] = []
            cancelled: list[int] = []

            async def slow(message: Message) -> None:
                n = message.body["n"]
                started.append(n)
                try:
                    await asyncio.sleep(0.2 if n == 0 else 30)
                except asyncio.CancelledError:
                    cancelled.append(n)
                    raise
                finished.append(n)

            worker = await AsyncWorker(broker, queue, slow, concurrency=2, prefetch=4).start()
            await AsyncProducer(broker).publish_many(queue, [{"n": n} for n in range(4)])
            await until(lambda: len(started) == 2, what="both handlers to start")
            assert await worker.stop(timeout=0.6) is False  # n=0 finished, n=1 did not
            assert (finished, cancelled) == ([0], [1])
            again: list[Message] = []
            async with AsyncWorker(broker, queue, _appender(again)):
                await until(lambda: len(again) == 3, what="the three unfinished messages")
            assert sorted(m.body["n"] for m in again) == [1, 2, 3]
            assert next(m for m in again if m.body["n"] == 1).redelivered

        run(scenario)

    def test_a_cancelled_run_stops_gracefully(self, run: Callable[[Scenario], None]) -> None:
        async def scenario(broker: AsyncBroker, names: Names) -> None:
            queue = names.queue()
            seen: list[Message] = []
            worker = AsyncWorker(broker, queue, _appender(seen), shutdown_timeout=5)
            running = asyncio.ensure_future(worker.run())
            await AsyncProducer(broker).publish_many(queue, [1, 2, 3])
            await until(lambda: len(seen) == 3, what="three handled messages")
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            assert worker.in_flight == 0
            await AsyncProducer(broker).publish(queue, 4)
            await asyncio.sleep(0.2)
            assert len(seen) == 3  # stopped: no longer consuming
            assert await broker.depth(queue) == 1

        run(scenario)

    def test_delayed_publish(self, run: Callable[[Scenario], None]) -> None:
        async def scenario(broker: AsyncBroker, names: Names) -> None:
            queue = names.queue()
            seen: list[Message] = []
            async with AsyncWorker(broker, queue, _appender(seen)):
                sent = time.monotonic()
                await AsyncProducer(broker).publish(queue, {"late": True}, delay=0.3)
                await until(lambda: seen)
                assert time.monotonic() - sent >= 0.3 * 0.95

        run(scenario)

    # -- tasks and events ---------------------------------------------------------------

    def test_tasks_run_by_name(self, run: Callable[[Scenario], None]) -> None:
        async def scenario(broker: AsyncBroker, names: Names) -> None:
            queue = names.queue()
            registry = TaskRegistry()
            results: list[tuple[int, str]] = []

            @task(broker, queue=queue, registry=registry, name="reports.build")
            async def build(user_id: int, fmt: str = "pdf") -> None:
                results.append((user_id, fmt))

            @task(broker, queue=queue, registry=registry, name="reports.sync")
            def build_sync(user_id: int) -> None:  # a plain function runs in a thread
                results.append((user_id, "sync"))

            await build.delay(1)
            await build.apply_async([2], {"fmt": "csv"})
            await build.apply_async([3], delay=0.2)
            await build_sync.delay(4)
            await AsyncProducer(broker).publish(queue, {"args": []}, type="reports.unknown")
            dead = AsyncDeadLetters(broker, queue)
            async with task_worker(broker, queue, registry=registry):
                await until(lambda: len(results) == 4, what="four task runs")
                await until(lambda: _is(dead.count(), 1), what="the unknown task")
            assert sorted(results) == [(1, "pdf"), (2, "csv"), (3, "pdf"), (4, "sync")]
            [letter] = await dead.inspect()
            assert (letter.type, letter.error_type) == ("reports.unknown", "Reject")

        run(scenario)

    def test_event_bus_fans_out_to_groups(self, run: Callable[[Scenario], None]) -> None:
        async def scenario(broker: AsyncBroker, names: Names) -> None:
            exchange = names.exchange()
            names.queues += [f"{exchange}.email", f"{exchange}.analytics"]
            email: list[Message] = []
            analytics: list[Message] = []
            failed_once: set[str] = set()

            async def flaky_email(message: Message) -> None:
                if message.body["user"] % 5 == 0 and message.id not in failed_once:
                    failed_once.add(message.id)
                    raise ConnectionError("SMTP busy")  # retried through a delay queue
                email.append(message)

            bus = AsyncEventBus(broker, exchange=exchange, retry=RetryPolicy(wait=lambda a: 0.05))
            await bus.subscribe("user.signed_up", flaky_email, group="email")
            await bus.subscribe("user.*", _appender(analytics), group="analytics")
            async with bus:
                for i in range(20):
                    await bus.publish("user.signed_up", {"user": i})
                await bus.publish("user.deleted", {"user": 99})
                await bus.publish("order.paid", {"order": 1})  # no subscriber: dropped
                await until(lambda: len(email) == 20 and len(analytics) == 21)
            assert sorted(m.body["user"] for m in email) == list(range(20))
            assert sorted(m.body["user"] for m in analytics) == [*range(20), 99]
            assert {m.attempt for m in email if m.id in failed_once} == {2}

        run(scenario)


def _appender(into: list[Message]) -> Callable[[Message], Awaitable[None]]:
    async def append(message: Message) -> None:
        into.append(message)

    return append


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _at_least(value: Awaitable[int], expected: int) -> bool:
    return await value >= expected
