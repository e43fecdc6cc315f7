"""The queue on the in-memory broker -> metrics, one trace from publisher to handler, logs."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

from scalepatterns.contrib import logging as sp_logging
from scalepatterns.contrib import otel, prometheus
from scalepatterns.queue import MemoryBroker, Message, Producer, RetryPolicy, Worker


@pytest.fixture
def broker():
    broker = MemoryBroker()
    yield broker
    broker.close()


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def run_scenario(broker: MemoryBroker, listeners) -> None:
    """3 good messages and 1 that always fails: retried once, then dead-lettered."""
    handled: list[Any] = []

    def handle(message: Message) -> None:
        if message.body == "poison":
            raise ValueError("cannot handle")
        handled.append(message.body)

    policy = RetryPolicy(attempts=2, wait=lambda attempt: 0.01)
    worker = Worker(broker, "orders", handle, retry=policy, listeners=listeners)
    producer = Producer(broker, listeners=listeners)
    with worker:
        producer.publish_many("orders", [1, 2])
        producer.publish("orders", 3)
        producer.publish("orders", "poison")
        wait_until(lambda: len(handled) == 3 and broker.depth("orders.dead") == 1)
    assert sorted(handled) == [1, 2, 3]


def test_queue_metrics(broker, registry, listeners) -> None:
    with prometheus.instrument(registry, listeners=listeners):
        run_scenario(broker, listeners)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"queue": "orders", **labels})

    assert value("scalepatterns_queue_published_messages_total") == 4
    assert value("scalepatterns_queue_acked_messages_total") == 3
    assert value("scalepatterns_queue_handler_duration_seconds_count") == 3
    assert value("scalepatterns_queue_retried_messages_total") == 1
    assert value("scalepatterns_queue_dead_lettered_messages_total", error="ValueError") == 1


def test_dead_letters_are_warnings(broker, listeners, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="tests.queue")
    with sp_logging.instrument(logging.getLogger("tests.queue"), listeners=listeners):
        run_scenario(broker, listeners)
    ours = [r for r in caplog.records if r.name == "tests.queue"]
    assert [(r.levelname, r.sp_event) for r in ours] == [
        ("INFO", "MessageRetried"),
        ("WARNING", "MessageDeadLettered"),
    ]
    assert ours[-1].sp_source == "orders"
    assert ours[-1].sp_attempt == 2


def round_trip(broker, provider, listeners, *, wrap: bool, kind: str = "sync") -> None:
    done = threading.Event()

    if kind == "sync":

        def handle(message: Message) -> None:
            done.set()

    else:

        async def handle(message: Message) -> None:
            await asyncio.sleep(0)
            done.set()

    handler = (
        otel.traced_handler(handle, queue="signups", tracer_provider=provider) if wrap else handle
    )
    worker = Worker(broker, "signups", handler, listeners=listeners)
    producer = otel.TracedProducer(Producer(broker, listeners=listeners), provider)
    tracer = provider.get_tracer("tests")
    with worker:
        with tracer.start_as_current_span("POST /signup"):
            producer.publish("signups", {"user": 1})
        assert done.wait(10)
    # `with worker` waited for the handler and its completion event


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_publish_and_handle_share_one_trace(broker, provider, exporter, listeners, kind) -> None:
    with otel.instrument(provider, listeners=listeners):
        round_trip(broker, provider, listeners, wrap=True, kind=kind)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert sorted(spans) == ["POST /signup", "signups process", "signups publish"]
    request, publish, process = (
        spans["POST /signup"],
        spans["signups publish"],
        spans["signups process"],
    )
    assert {request.context.trace_id, publish.context.trace_id, process.context.trace_id} == {
        request.context.trace_id
    }
    assert publish.parent.span_id == request.context.span_id
    assert process.parent.span_id == publish.context.span_id
    assert [e.name for e in publish.events] == ["scalepatterns.message_published"]


def test_an_unwrapped_handler_gets_a_span_from_the_completion_event(
    broker, provider, exporter, listeners
) -> None:
    with otel.instrument(provider, listeners=listeners):
        round_trip(broker, provider, listeners, wrap=False)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    process = spans["signups process"]
    assert process.parent is None  # no trace context without traced_handler
    assert process.end_time >= process.start_time
    assert process.attributes["scalepatterns.attempt"] == 1
    assert process.attributes["messaging.destination.name"] == "signups"
