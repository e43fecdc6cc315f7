"""Chapter 6: resilience: retry, circuit breaker, timeout, fallback, load balancing."""

from __future__ import annotations

import contextlib
import random

from scalepatterns import CircuitOpen, EventRecorder, FakeClock, Listeners
from scalepatterns.resilience import (
    CircuitBreaker,
    EndpointEjected,
    LoadBalancer,
    RetryScheduled,
    fallback,
    resilient,
    retry,
    timeout,
)

TITLE = "Resilience: retry, circuit breaker, timeout, fallback, load balancing"


def run() -> None:
    clock = FakeClock()  # simulated time: backoff and open periods take no real time
    listeners, recorder = Listeners(), EventRecorder()
    listeners.add(recorder)
    rng = random.Random(6)

    calls = {"n": 0}

    def flaky_quote() -> float:
        calls["n"] += 1
        if rng.random() < 0.4:
            raise ConnectionError("connection reset")
        return 9.99

    breaker = CircuitBreaker(
        name="quotes", window=10, minimum_calls=5, cooldown=30, clock=clock, listeners=listeners
    )
    quote = resilient(
        timeout=timeout(0.5, mode="inline", clock=clock, listeners=listeners),
        retry=retry(on=ConnectionError, attempts=3, clock=clock, rng=rng, listeners=listeners),
        breaker=breaker,
        fallback=fallback(0.0, on=(ConnectionError, CircuitOpen), listeners=listeners),
    )(flaky_quote)
    answers = [quote() for _ in range(20)]
    print(
        f"   retry: 20 calls to a service failing 40% of the time -> "
        f"{sum(a > 0 for a in answers)} answered, {calls['n']} attempts, "
        f"{len(recorder.of_type(RetryScheduled))} retries with jittered backoff"
    )

    reached = {"n": 0}

    def down() -> float:
        reached["n"] += 1
        raise ConnectionError("quotes service down")

    reports = CircuitBreaker(
        name="reports", window=10, minimum_calls=5, cooldown=30, clock=clock, listeners=listeners
    )
    dead = resilient(
        breaker=reports,
        fallback=fallback(-1.0, on=(ConnectionError, CircuitOpen), listeners=listeners),
    )(down)
    results = [dead() for _ in range(10)]
    print(
        f"   circuit breaker: the service went down; of 10 calls {reached['n']} reached it "
        f"before its breaker opened, "
        f"state {reports.state!r}, retry in {reports.retry_after():.0f}s; "
        f"{results.count(-1.0)} callers got the fallback"
    )

    lb = LoadBalancer(
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
        "power_of_two",
        failure_threshold=3,
        clock=clock,
        listeners=listeners,
    )
    served: dict[str, int] = {}

    def call_instance(host: str) -> None:
        served[host] = served.get(host, 0) + 1
        clock.advance(0.2 if host == "10.0.0.3" else 0.01)  # one slow instance
        if host == "10.0.0.2":
            raise ConnectionError("instance 2 is broken")

    for _ in range(300):
        with contextlib.suppress(ConnectionError), lb.pick() as host:
            call_instance(host)
    ejected = sorted({e.endpoint for e in recorder.of_type(EndpointEjected)})
    print(f"   load balancing (power of two choices on EWMA latency): calls served {served}")
    print(
        f"   passive health: ejected {ejected}; states "
        f"{ {name: s.state for name, s in lb.stats().items()} }"
    )
