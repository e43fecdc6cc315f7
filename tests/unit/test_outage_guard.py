"""OutageGuard: open after consecutive failures, one probe after the cool-down."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalepatterns import ConfigurationError, FakeClock, OutageGuard


def test_opens_after_threshold_and_lets_one_probe_through() -> None:
    clock = FakeClock()
    guard = OutageGuard(failure_threshold=3, cooldown=10.0, clock=clock)
    assert guard.record_failure() is False
    assert guard.record_failure() is False
    assert guard.allow()
    assert guard.record_failure() is True
    assert guard.is_open
    assert not guard.allow()
    assert guard.retry_after() == 10.0
    clock.advance(9.9)
    assert not guard.allow()
    clock.advance(0.1)
    assert guard.allow()
    assert not guard.allow(), "only one probe while half-open"


def test_failed_probe_reopens_for_a_full_cooldown() -> None:
    clock = FakeClock()
    guard = OutageGuard(failure_threshold=1, cooldown=2.0, clock=clock)
    guard.record_failure()
    clock.advance(2.0)
    assert guard.allow()
    assert guard.record_failure() is True
    assert guard.retry_after() == 2.0
    assert not guard.allow()


def test_success_closes_and_resets_the_count() -> None:
    clock = FakeClock()
    guard = OutageGuard(failure_threshold=2, cooldown=1.0, clock=clock)
    guard.record_failure()
    guard.record_success()
    guard.record_failure()
    assert not guard.is_open, "failures must be consecutive"
    guard.record_failure()
    clock.advance(1.0)
    assert guard.allow()
    guard.record_success()
    assert not guard.is_open
    assert guard.allow()
    assert guard.allow()


@given(st.lists(st.sampled_from(["fail", "ok", "tick"]), max_size=60))
def test_never_allows_during_cooldown(ops: list[str]) -> None:
    clock = FakeClock()
    guard = OutageGuard(failure_threshold=2, cooldown=3.0, clock=clock)
    for op in ops:
        if op == "fail":
            guard.record_failure()
        elif op == "ok":
            guard.record_success()
        else:
            clock.advance(1.0)
        if guard.is_open and guard.retry_after() > 0:
            assert not guard.allow()


def test_concurrent_callers_get_a_single_probe() -> None:
    clock = FakeClock()
    guard = OutageGuard(failure_threshold=1, cooldown=1.0, clock=clock)
    guard.record_failure()
    clock.advance(1.0)
    allowed: list[bool] = []
    threads = [threading.Thread(target=lambda: allowed.append(guard.allow())) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed.count(True) == 1


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [({"failure_threshold": 0}, "failure_threshold"), ({"cooldown": 0}, "cooldown")],
)
def test_bad_configuration_names_the_parameter(kwargs: dict[str, float], parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        OutageGuard(**kwargs)  # type: ignore[arg-type]
    assert info.value.parameter == parameter


def test_a_released_probe_lets_another_probe_go() -> None:
    clock = FakeClock()
    guard = OutageGuard(failure_threshold=1, cooldown=5.0, clock=clock)
    guard.record_failure()
    clock.advance(5.0)
    assert guard.allow()  # the probe
    assert not guard.allow()
    guard.release_probe()  # it was cancelled: no verdict
    assert guard.allow()  # another caller probes
    guard.record_success()
    guard.release_probe()  # no effect on a closed guard
    assert guard.allow()
    assert not guard.is_open


def test_a_probe_that_never_reports_back_blocks_others_for_one_cooldown_only() -> None:
    clock = FakeClock()
    guard = OutageGuard(failure_threshold=1, cooldown=5.0, clock=clock)
    guard.record_failure()
    clock.advance(5.0)
    assert guard.allow()  # the probe; its caller is interrupted and never reports
    clock.advance(4.9)
    assert not guard.allow()
    clock.advance(0.1)
    assert guard.allow(), "the lost probe no longer blocks the backend for good"
    guard.record_success()
    assert not guard.is_open
