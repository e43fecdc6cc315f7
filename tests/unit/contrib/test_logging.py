"""Structured logs: quiet by default, stable extra fields, repeats folded."""

from __future__ import annotations

import contextlib
import logging

import pytest

from scalepatterns import CircuitOpen, FakeClock
from scalepatterns.contrib import logging as sp_logging
from scalepatterns.resilience import BreakerOpened, BreakerRejected, CircuitBreaker, RetryAttempt
from scalepatterns.sharding import FanOutError, FanOutFinished, HashRing, ShardRouter

LOGGER = "tests.scalepatterns"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def logged(listeners, clock, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    handle = sp_logging.instrument(logging.getLogger(LOGGER), listeners=listeners, clock=clock)
    yield caplog
    handle.uninstrument()


def opened(source: str = "payments") -> BreakerOpened:
    return BreakerOpened(source=source, failure_rate=1.0, slow_rate=0.0, wait=5.0)


def test_breaker_lifecycle_logs_warning_then_info_with_stable_extras(
    logged, listeners, clock
) -> None:
    breaker = CircuitBreaker(
        name="payments", window=4, minimum_calls=2, cooldown=5, clock=clock, listeners=listeners
    )

    def boom() -> None:
        raise ConnectionError("down")

    for _ in range(10):  # 2 failures open it, 8 calls are rejected: one line, not nine
        with contextlib.suppress(ConnectionError, CircuitOpen):
            breaker.call(boom)
    clock.advance(6)
    for _ in range(3):
        breaker.call(lambda: None)
    records = logged.records
    assert [(r.levelname, r.sp_event) for r in records] == [
        ("WARNING", "BreakerOpened"),
        ("INFO", "BreakerHalfOpened"),
        ("INFO", "BreakerClosed"),
    ]
    first = records[0]
    assert first.sp_block == "resilience"
    assert first.sp_source == "payments"
    assert first.sp_failure_rate == 1.0
    assert first.sp_wait == 5.0
    assert first.sp_suppressed == 0
    assert "payments" in first.getMessage()


def test_everyday_events_are_not_logged_by_default(logged, listeners) -> None:
    router = ShardRouter(HashRing(["s1", "s2"]), {"s1": 1, "s2": 2}, listeners=listeners)
    for i in range(50):
        router.for_key(i)
    listeners.emit(RetryAttempt(source="f", attempt=1))
    listeners.emit(BreakerRejected(source="b", retry_after=1.0))
    assert logged.records == []


def test_level_chosen_from_the_event(logged, listeners) -> None:
    router = ShardRouter(HashRing(["s1", "s2"]), {"s1": 1, "s2": 2}, listeners=listeners)
    router.fan_out(lambda shard, resource: resource)

    def half_down(shard: str, resource: int) -> int:
        if shard == "s1":
            raise ConnectionError("s1 down")
        return resource

    with pytest.raises(FanOutError):
        router.fan_out(half_down)
    assert [(r.levelname, r.sp_event, r.sp_failed) for r in logged.records] == [
        ("WARNING", "FanOutFinished", 1)
    ]


def test_repeats_are_folded_per_source_and_interval(logged, listeners, clock) -> None:
    for _ in range(5):
        listeners.emit(opened())
    listeners.emit(opened("other"))
    clock.advance(11)
    listeners.emit(opened())
    assert [(r.sp_source, r.sp_suppressed) for r in logged.records] == [
        ("payments", 0),
        ("other", 0),
        ("payments", 4),
    ]
    assert "(4 similar suppressed)" in logged.records[-1].getMessage()


def test_debug_level_logs_everything_and_min_interval_zero_keeps_every_line(
    listeners, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with sp_logging.instrument(
        logging.getLogger(LOGGER), logging.DEBUG, listeners=listeners, min_interval=0
    ):
        for _ in range(3):
            listeners.emit(RetryAttempt(source="f", attempt=1))
    assert [r.levelname for r in caplog.records] == ["DEBUG"] * 3


def test_levels_can_be_overridden(listeners, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with sp_logging.instrument(
        logging.getLogger(LOGGER),
        listeners=listeners,
        levels={BreakerOpened: logging.ERROR, FanOutFinished: logging.DEBUG},
    ):
        listeners.emit(opened())
        listeners.emit(FanOutFinished(source="s", shards=2, failed=1))
    assert [(r.levelname, r.sp_event) for r in caplog.records] == [("ERROR", "BreakerOpened")]


def test_a_disabled_logger_costs_no_formatting(listeners, caplog, monkeypatch) -> None:
    formatted: list[object] = []
    fields = sp_logging._fields
    monkeypatch.setattr(sp_logging, "_fields", lambda e: formatted.append(e) or fields(e))
    caplog.set_level(logging.ERROR, logger=LOGGER)  # BreakerOpened logs at WARNING
    with sp_logging.instrument(logging.getLogger(LOGGER), listeners=listeners):
        listeners.emit(opened())
        assert formatted == []  # the event was never turned into fields or text
        caplog.set_level(logging.WARNING, logger=LOGGER)
        listeners.emit(opened())
    assert len(formatted) == 1  # the same path formats once the level lets it through
    assert [r.sp_event for r in caplog.records] == ["BreakerOpened"]
