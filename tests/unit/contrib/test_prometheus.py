"""Scripted scenarios per block on embedded defaults -> the expected Prometheus series."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from scalepatterns import CircuitOpen, DeadlineExceeded, FakeClock, MissingDependency
from scalepatterns.contrib import prometheus
from scalepatterns.events import Event, Listeners
from scalepatterns.resilience import (
    BreakerRejected,
    CircuitBreaker,
    LoadBalancer,
    fallback,
    retry,
    timeout,
)
from scalepatterns.sharding import FanOutError, HashRing, ShardRouter


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@pytest.fixture
def instrumented(registry: CollectorRegistry, listeners: Listeners) -> CollectorRegistry:
    handle = prometheus.instrument(registry, listeners=listeners)
    yield registry
    handle.uninstrument()


# ------------------------------------------------------------------- resilience


def test_breaker_state_transitions_and_rejections(instrumented, listeners) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        name="payments", window=4, minimum_calls=2, cooldown=5, clock=clock, listeners=listeners
    )

    def boom() -> None:
        raise ConnectionError("down")

    for _ in range(5):
        with contextlib.suppress(ConnectionError, CircuitOpen):
            breaker.call(boom)
    assert value(instrumented, "scalepatterns_breaker_state", breaker="payments") == 2
    assert (
        value(
            instrumented,
            "scalepatterns_breaker_transitions_total",
            breaker="payments",
            state="open",
        )
        == 1
    )
    assert (
        value(instrumented, "scalepatterns_breaker_rejected_calls_total", breaker="payments") == 3
    )

    clock.advance(6)
    for _ in range(3):  # the trial calls succeed: half-open, then closed
        breaker.call(lambda: None)
    assert value(instrumented, "scalepatterns_breaker_state", breaker="payments") == 0
    for state in ("open", "half_open", "closed"):
        assert (
            value(
                instrumented,
                "scalepatterns_breaker_transitions_total",
                breaker="payments",
                state=state,
            )
            == 1
        )


def test_retry_timeout_and_fallback_counters(instrumented, listeners) -> None:
    clock = FakeClock()
    calls = {"n": 0}

    @retry(on=ConnectionError, attempts=3, clock=clock, listeners=listeners)
    def flaky() -> str:
        calls["n"] += 1
        raise ConnectionError("reset")

    with pytest.raises(ConnectionError):
        flaky()
    samples = {
        s.labels["function"]: s.value
        for m in instrumented.collect()
        if m.name == "scalepatterns_retry_attempts"
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert list(samples.values()) == [3.0]
    (function,) = samples
    assert function.endswith("flaky")  # the qualified name, never a call's arguments
    assert value(instrumented, "scalepatterns_retry_retries_total", function=function) == 2
    assert (
        value(
            instrumented,
            "scalepatterns_retry_gave_up_total",
            function=function,
            reason="attempts",
        )
        == 1
    )

    def slow() -> int:
        clock.advance(2)
        return 1

    slow_with_budget = timeout(1, mode="inline", clock=clock, listeners=listeners)(slow)
    with pytest.raises(DeadlineExceeded):
        slow_with_budget()
    answered = fallback(0, on=DeadlineExceeded, listeners=listeners)(slow_with_budget)
    assert answered() == 0
    timeouts = [
        s for m in instrumented.collect() if m.name == "scalepatterns_timeouts" for s in m.samples
    ]
    assert [s.value for s in timeouts if s.name.endswith("_total")] == [2.0]
    fallbacks = [
        (s.labels["error"], s.value)
        for m in instrumented.collect()
        if m.name == "scalepatterns_fallbacks"
        for s in m.samples
        if s.name.endswith("_total")
    ]
    assert fallbacks == [("DeadlineExceeded", 1.0)]


def test_balancer_ejection_gauge_and_counter(instrumented, listeners) -> None:
    clock = FakeClock()
    lb = LoadBalancer(
        ["a", "b"], "round_robin", failure_threshold=2, clock=clock, listeners=listeners
    )
    for _ in range(10):
        with contextlib.suppress(ConnectionError), lb.pick() as host:
            if host == "b":
                raise ConnectionError("b is broken")
    labels = {"balancer": lb.name, "endpoint": "b"}
    assert (
        value(
            instrumented,
            "scalepatterns_balancer_ejections_total",
            reason="consecutive_failures",
            **labels,
        )
        == 1
    )
    assert value(instrumented, "scalepatterns_balancer_endpoint_ejected", **labels) == 1
    assert (
        value(
            instrumented, "scalepatterns_balancer_endpoint_ejected", balancer=lb.name, endpoint="a"
        )
        is None
    )


# --------------------------------------------------------------------- sharding


def test_shard_lookups_per_shard_and_skew(instrumented, listeners) -> None:
    router = ShardRouter(
        HashRing(["s1", "s2", "s3"]), {"s1": 1, "s2": 2, "s3": 3}, name="users", listeners=listeners
    )
    counts: dict[str, int] = {}
    for i in range(300):
        shard = router.shard_for(f"user-{i}")
        counts[shard] = counts.get(shard, 0) + 1
    for shard, count in counts.items():
        assert (
            value(instrumented, "scalepatterns_shard_lookups_total", router="users", shard=shard)
            == count
        )
    expected_skew = max(counts.values()) / (300 / len(counts))
    assert value(
        instrumented, "scalepatterns_shard_lookup_skew_ratio", router="users"
    ) == pytest.approx(expected_skew)

    def query(shard: str, resource: int) -> int:
        if shard == "s2":
            raise ConnectionError("s2 is down")
        return resource

    with pytest.raises(FanOutError):
        router.fan_out(query)
    assert value(instrumented, "scalepatterns_shard_fanouts_total", router="users") == 1
    assert value(instrumented, "scalepatterns_shard_fanout_failures_total", router="users") == 1


def test_node_changes_on_a_ring(instrumented, listeners) -> None:
    ring = HashRing(["s1", "s2"], listeners=listeners)
    ring.add_node("s3")
    ring.remove_node("s1")
    for change in ("added", "removed"):
        assert (
            value(
                instrumented,
                "scalepatterns_shard_node_changes_total",
                placement="HashRing",
                change=change,
            )
            == 1
        )


# ------------------------------------------------------------------ the listener


def test_one_listener_and_uninstrument_stops_updates(registry, listeners) -> None:
    handle = prometheus.instrument(registry, listeners=listeners)
    assert listeners.active
    assert handle.active
    listeners.emit(BreakerRejected(source="b", retry_after=1.0))
    handle.uninstrument()
    handle.uninstrument()  # idempotent
    assert not listeners.active
    assert not handle.active
    listeners.emit(BreakerRejected(source="b", retry_after=1.0))
    assert value(registry, "scalepatterns_breaker_rejected_calls_total", breaker="b") == 1


def test_instrumenting_a_registry_again_reuses_its_metrics(registry, listeners) -> None:
    first = prometheus.instrument(registry, listeners=listeners)
    first.uninstrument()
    with prometheus.instrument(registry, listeners=listeners):
        listeners.emit(BreakerRejected(source="b", retry_after=1.0))
    assert not listeners.active
    assert value(registry, "scalepatterns_breaker_rejected_calls_total", breaker="b") == 1
    names = prometheus.metric_names(registry)
    assert len(names) == len(set(names))
    assert all(n.startswith("scalepatterns_") for n in names)


def test_unknown_events_are_ignored_and_subclasses_resolve(registry, listeners) -> None:
    @dataclass(frozen=True, slots=True)
    class Custom(Event):
        pass

    @dataclass(frozen=True, slots=True)
    class MyRejected(BreakerRejected):
        pass

    with prometheus.instrument(registry, listeners=listeners) as handle:
        for _ in range(2):
            listeners.emit(Custom(source="x"))
            listeners.emit(MyRejected(source="b", retry_after=0.0))
        assert Custom not in handle.listener.event_types
    assert value(registry, "scalepatterns_breaker_rejected_calls_total", breaker="b") == 2


def test_names_follow_prometheus_conventions(registry, listeners) -> None:
    prometheus.instrument(registry, listeners=listeners).uninstrument()
    declared = set(prometheus.metric_names(registry))
    kinds = {m.name: m.type for m in registry.collect()}
    for name in declared:
        kind = kinds.get(name.removesuffix("_total"), kinds.get(name))
        assert kind is not None, name
        assert name.endswith("_total") == (kind == "counter"), name
        if kind == "histogram":
            assert name.endswith("_seconds"), name
        assert name == name.lower()
        assert name.startswith("scalepatterns_")
    assert "scalepatterns_shard_lookup_skew_ratio" in kinds


def test_missing_prometheus_client_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(MissingDependency, match=r"scalepatterns\[prometheus\]"):
        prometheus.instrument()


def test_importing_the_adapters_loads_no_driver_or_exporter() -> None:
    import subprocess

    code = (
        "import sys\n"
        "import scalepatterns.contrib.prometheus, scalepatterns.contrib.otel\n"
        "import scalepatterns.contrib.logging\n"
        "loaded = [m for m in ('prometheus_client', 'opentelemetry', 'sqlalchemy', 'redis', 'pika')"
        " if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_block_whose_driver_is_missing_is_left_out(monkeypatch, listeners) -> None:
    for name in [m for m in sys.modules if m.startswith(("scalepatterns.routing", "sqlalchemy"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    registry = CollectorRegistry()
    with prometheus.instrument(registry, listeners=listeners):
        listeners.emit(BreakerRejected(source="b", retry_after=1.0))
    names = prometheus.metric_names(registry)
    assert "scalepatterns_breaker_rejected_calls_total" in names
    assert not [n for n in names if n.startswith("scalepatterns_router_")]
    assert value(registry, "scalepatterns_breaker_rejected_calls_total", breaker="b") == 1


def test_concurrent_emitters_lose_no_count(registry, listeners) -> None:
    import threading

    barrier = threading.Barrier(8)

    def emit(index: int) -> None:
        barrier.wait()
        for _ in range(500):
            listeners.emit(BreakerRejected(source=f"b{index % 2}", retry_after=0.0))

    with prometheus.instrument(registry, listeners=listeners):
        threads = [threading.Thread(target=emit, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    for source in ("b0", "b1"):
        assert value(registry, "scalepatterns_breaker_rejected_calls_total", breaker=source) == 2000


def test_a_failing_update_never_reaches_the_caller(registry, listeners, caplog) -> None:
    from scalepatterns.sharding import RowsResharded

    with prometheus.instrument(registry, listeners=listeners):
        # a negative count is refused by prometheus_client's Counter.inc
        listeners.emit(RowsResharded(source="r", from_shard="a", to_shard="b", rows=-1))
        listeners.emit(BreakerRejected(source="b", retry_after=0.0))
    assert any(
        "failed" in r.getMessage() for r in caplog.records if r.name == "scalepatterns.events"
    )
    assert value(registry, "scalepatterns_breaker_rejected_calls_total", breaker="b") == 1


def test_watched_balancer_picks_and_failures_at_scrape(registry, listeners) -> None:
    import gc

    lb = LoadBalancer(["a", "b"], "round_robin", name="api", listeners=listeners)
    prometheus.watch_balancer(lb, registry)
    for index in range(6):
        with contextlib.suppress(ConnectionError), lb.pick() as host:
            if host == "b" and index < 2:
                raise ConnectionError("b hiccup")
    for endpoint, failures in (("a", 0), ("b", 1)):
        labels = {"balancer": "api", "endpoint": endpoint}
        assert value(registry, "scalepatterns_balancer_picks_total", **labels) == 3
        assert value(registry, "scalepatterns_balancer_failures_total", **labels) == failures
        assert value(registry, "scalepatterns_balancer_in_flight_calls", **labels) == 0
    del lb
    gc.collect()
    assert (
        value(registry, "scalepatterns_balancer_picks_total", balancer="api", endpoint="a") is None
    )
    with pytest.raises(TypeError, match="LoadBalancer"):
        prometheus.watch_balancer(object(), registry)
