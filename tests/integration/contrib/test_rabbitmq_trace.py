"""A publish -> consume round trip over RabbitMQ yields one trace; metrics count it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from scalepatterns.contrib import otel, prometheus
from scalepatterns.events import Listeners
from scalepatterns.queue import Message, Producer, RabbitMQBroker, Worker

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def broker(amqp_url: str, unique_name: str) -> Iterator[RabbitMQBroker]:
    broker = RabbitMQBroker(amqp_url)
    yield broker
    for name in (unique_name, f"{unique_name}.dead"):
        with contextlib.suppress(Exception):
            broker.delete_queue(name)
    broker.close()


def test_round_trip_over_rabbitmq_is_one_trace(broker, unique_name) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    listeners, registry = Listeners(), CollectorRegistry()
    received: list[Message] = []
    done = threading.Event()

    def handle(message: Message) -> None:
        received.append(message)
        done.set()

    with (
        otel.instrument(provider, listeners=listeners),
        prometheus.instrument(registry, listeners=listeners),
    ):
        worker = Worker(
            broker,
            unique_name,
            otel.traced_handler(handle, queue=unique_name, tracer_provider=provider),
            listeners=listeners,
        )
        producer = otel.TracedProducer(Producer(broker, listeners=listeners), provider)
        with worker:
            with provider.get_tracer("tests").start_as_current_span("request"):
                producer.publish(unique_name, {"n": 1}, headers={"tenant": "a"})
            assert done.wait(30)
    provider.shutdown()

    (message,) = received
    assert message.headers == {"tenant": "a"}
    assert set(message.trace) == {"traceparent"}
    spans = {s.name: s for s in exporter.get_finished_spans()}
    request = spans["request"]
    publish = spans[f"{unique_name} publish"]
    process = spans[f"{unique_name} process"]
    assert len(spans) == 3
    assert {s.context.trace_id for s in spans.values()} == {request.context.trace_id}
    assert publish.parent.span_id == request.context.span_id
    assert process.parent.span_id == publish.context.span_id
    assert message.trace["traceparent"].split("-")[2] == f"{publish.context.span_id:016x}"
    labels = {"queue": unique_name}
    assert registry.get_sample_value("scalepatterns_queue_published_messages_total", labels) == 1
    assert registry.get_sample_value("scalepatterns_queue_acked_messages_total", labels) == 1
