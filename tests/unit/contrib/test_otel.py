"""OpenTelemetry: span events, attributes and spans from scripted scenarios (SDK, in memory)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from scalepatterns import CircuitOpen, FakeClock, MissingDependency
from scalepatterns.contrib import otel
from scalepatterns.resilience import BreakerOpened, CircuitBreaker, RetryScheduled, retry
from scalepatterns.sharding import HashRing, ShardRouter


@pytest.fixture
def tracer(provider, listeners):
    handle = otel.instrument(provider, listeners=listeners)
    yield provider.get_tracer("tests")
    handle.uninstrument()


def test_breaker_open_and_rejections_are_events_on_the_callers_span(
    tracer, listeners, exporter
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        name="payments", window=4, minimum_calls=2, cooldown=5, clock=clock, listeners=listeners
    )

    def boom() -> None:
        raise ConnectionError("down")

    with tracer.start_as_current_span("checkout"):
        for _ in range(3):
            with contextlib.suppress(ConnectionError, CircuitOpen):
                breaker.call(boom)
    (span,) = exporter.get_finished_spans()
    assert span.name == "checkout"
    names = [e.name for e in span.events]
    assert names == ["scalepatterns.breaker_opened", "scalepatterns.breaker_rejected"]
    opened = span.events[0].attributes
    assert opened["scalepatterns.source"] == "payments"
    assert opened["scalepatterns.failure_rate"] == 1.0
    assert opened["scalepatterns.wait"] == 5.0


def test_retries_are_span_events(tracer, listeners, exporter) -> None:
    clock = FakeClock()
    attempts = {"n": 0}

    @retry(on=ConnectionError, attempts=3, clock=clock, listeners=listeners)
    def flaky() -> str:
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise ConnectionError("reset")
        return "ok"

    with tracer.start_as_current_span("call"):
        assert flaky() == "ok"
    (span,) = exporter.get_finished_spans()
    assert [e.name for e in span.events] == [otel.event_name(RetryScheduled)] * 2
    assert [e.attributes["scalepatterns.attempt"] for e in span.events] == [1, 2]


def test_shard_routing_sets_attributes_on_the_callers_span(tracer, listeners, exporter) -> None:
    router = ShardRouter(
        HashRing(["s1", "s2"]), {"s1": 1, "s2": 2}, name="users", listeners=listeners
    )
    with tracer.start_as_current_span("load profile"):
        shard = router.shard_for("alice")
    (span,) = exporter.get_finished_spans()
    assert span.attributes["scalepatterns.shard"] == shard
    assert span.attributes["scalepatterns.shard.router"] == "users"


def test_without_a_current_span_nothing_is_recorded(tracer, listeners, exporter) -> None:
    listeners.emit(BreakerOpened(source="b", failure_rate=1.0, slow_rate=0.0, wait=1.0))
    assert exporter.get_finished_spans() == ()


def test_event_names() -> None:
    assert otel.event_name(BreakerOpened) == "scalepatterns.breaker_opened"


# ---------------------------------------------------------- trace context in messages


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, dict[str, Any]]] = []

    def publish(self, queue: str, body: Any, *, headers: Any = None, **kw: Any) -> str:
        self.sent.append((queue, body, dict(headers or {})))
        return f"id-{len(self.sent)}"

    def publish_many(self, queue: str, bodies: Any, *, headers: Any = None, **kw: Any) -> list[str]:
        return [self.publish(queue, body, headers=headers) for body in bodies]


def as_message(queue: str, headers: dict[str, Any], message_id: str) -> SimpleNamespace:
    trace = {k: v for k, v in headers.items() if k in ("traceparent", "tracestate")}
    return SimpleNamespace(id=message_id, routing_key=queue, attempt=1, trace=trace)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_handler_span_is_a_child_of_the_publishers(provider, exporter, kind) -> None:
    producer = otel.TracedProducer(FakeProducer(), provider)
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("signup"):
        message_id = producer.publish("emails", {"to": "ada"}, headers={"tenant": "a"})
    queue, _, headers = producer.producer.sent[0]
    assert headers["tenant"] == "a"
    assert headers["traceparent"].startswith("00-")
    seen: list[int] = []

    if kind == "sync":

        def handle(message: Any) -> None:
            seen.append(message.attempt)

    else:

        async def handle(message: Any) -> None:
            await asyncio.sleep(0)
            seen.append(message.attempt)

    wrapped = otel.traced_handler(handle, tracer_provider=provider)
    assert asyncio.iscoroutinefunction(wrapped) == (kind == "async")
    outcome = wrapped(as_message(queue, headers, message_id))
    if kind == "async":
        asyncio.run(outcome)
    assert seen == [1]
    spans = {s.name: s for s in exporter.get_finished_spans()}
    signup, publish, process = spans["signup"], spans["emails publish"], spans["emails process"]
    assert len({signup.context.trace_id, publish.context.trace_id, process.context.trace_id}) == 1
    assert publish.parent.span_id == signup.context.span_id
    assert process.parent.span_id == publish.context.span_id
    assert publish.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert publish.attributes["messaging.message.id"] == message_id
    assert process.attributes["messaging.destination.name"] == "emails"


def test_a_failing_handler_records_the_exception(provider, exporter) -> None:
    headers = otel.inject()  # no current span: no context, a root span on the consumer
    assert "traceparent" not in headers

    def handle(message: Any) -> None:
        raise ValueError("bad message")

    wrapped = otel.traced_handler(handle, queue="jobs", tracer_provider=provider)
    with pytest.raises(ValueError, match="bad message"):
        wrapped(as_message("jobs", headers, "m1"))
    (span,) = exporter.get_finished_spans()
    assert span.name == "jobs process"
    assert span.parent is None
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_publish_many_carries_one_context(provider, exporter) -> None:
    producer = otel.TracedProducer(FakeProducer(), provider)
    ids = producer.publish_many("emails", [1, 2, 3])
    assert ids == ["id-1", "id-2", "id-3"]
    parents = {h["traceparent"].rsplit("-", 1)[0] for _, _, h in producer.producer.sent}
    (span,) = exporter.get_finished_spans()
    assert parents == {f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}"}
    assert span.attributes["messaging.batch.message_count"] == 3


def test_extract_reads_bytes_headers(provider) -> None:
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("p") as span:
        headers = otel.inject()
    context = otel.extract({k: v.encode() for k, v in headers.items()})
    from opentelemetry import trace

    assert (
        trace.get_current_span(context).get_span_context().span_id
        == span.get_span_context().span_id
    )


def test_missing_opentelemetry_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)
    with pytest.raises(MissingDependency, match=r"scalepatterns\[otel\]"):
        otel.instrument()
