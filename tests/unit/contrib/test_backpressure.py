"""Backpressure on its in-process defaults -> metrics, span events, logs."""

from __future__ import annotations

import logging

import pytest

from scalepatterns import FakeClock
from scalepatterns.backpressure import (
    BulkheadFull,
    ConcurrencyLimiter,
    QueueBackpressure,
    RateLimiter,
)
from scalepatterns.contrib import logging as sp_logging
from scalepatterns.contrib import otel, prometheus
from scalepatterns.errors import QueueFull


def scenario(listeners, clock: FakeClock) -> None:
    limiter = RateLimiter("5/s", burst=5, name="api", clock=clock, listeners=listeners)
    decisions = [limiter.acquire("user-1").allowed for _ in range(8)]
    assert decisions == [True] * 5 + [False] * 3
    bulkhead = ConcurrencyLimiter(1, name="reports", listeners=listeners)
    with bulkhead, pytest.raises(BulkheadFull):
        bulkhead.acquire()
    depth = [0]
    gate = QueueBackpressure(
        lambda: depth[0], high=100, low=20, mode="reject", queue="jobs", listeners=listeners
    )
    depth[0] = 150
    with pytest.raises(QueueFull):
        gate.admit()
    depth[0] = 10
    assert gate.admit()


def test_limiter_bulkhead_and_queue_depth_metrics(registry, listeners) -> None:
    with prometheus.instrument(registry, listeners=listeners):
        scenario(listeners, FakeClock())

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("scalepatterns_limiter_allowed_total", limiter="api", backend="memory") == 5
    assert value("scalepatterns_limiter_rejected_total", limiter="api", backend="memory") == 3
    assert value("scalepatterns_bulkhead_rejected_total", bulkhead="reports", reason="full") == 1
    assert value("scalepatterns_queue_throttles_total", queue="jobs") == 1
    assert value("scalepatterns_queue_throttled", queue="jobs") == 0
    assert value("scalepatterns_queue_depth_messages", queue="jobs") == 10


def test_rejections_are_span_events(provider, exporter, listeners) -> None:
    tracer = provider.get_tracer("tests")
    with otel.instrument(provider, listeners=listeners), tracer.start_as_current_span("req"):
        scenario(listeners, FakeClock())
    (span,) = exporter.get_finished_spans()
    names = [e.name for e in span.events]
    assert names.count("scalepatterns.rate_rejected") == 3
    assert names.count("scalepatterns.bulkhead_rejected") == 1
    assert "scalepatterns.queue_throttled" in names
    assert "scalepatterns.rate_allowed" not in names


def test_throttling_is_a_warning(listeners, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="tests.bp")
    with sp_logging.instrument(logging.getLogger("tests.bp"), listeners=listeners):
        scenario(listeners, FakeClock())
    ours = [(r.levelname, r.sp_event) for r in caplog.records if r.name == "tests.bp"]
    assert ours == [("WARNING", "QueueThrottled"), ("INFO", "QueueReleased")]
