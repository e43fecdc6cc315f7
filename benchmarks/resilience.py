"""Resilience: per-call overhead of the breaker (vs pybreaker), of retry on a succeeding
call (vs bare tenacity), of `lb.pick()` per strategy, and the chaos scenario's figures."""

from __future__ import annotations

import random

import pybreaker
import tenacity

from benchmarks.harness import Bench
from scalepatterns.events import Listeners
from scalepatterns.resilience import CircuitBreaker, LoadBalancer, retry


def work() -> int:
    return 42


def run(bench: Bench) -> None:
    quiet = Listeners()

    ours = CircuitBreaker(name="bench", listeners=quiet)
    ours_decorated = ours(work)
    theirs = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
    theirs_decorated = theirs(work)
    bench.compare(
        "circuit breaker, closed, succeeding call",
        {
            "scalepatterns breaker.call(fn)": lambda: ours.call(work),
            "scalepatterns @breaker": ours_decorated,
            "pybreaker cb.call(fn)": lambda: theirs.call(work),
            "pybreaker @cb": theirs_decorated,
            "bare call (floor)": work,
        },
        baseline="pybreaker cb.call(fn)",
        number=50_000,
        target="<= 1.0x pybreaker",
    )

    ours_retry = retry(on=ConnectionError, attempts=3, listeners=quiet)(work)
    bare_tenacity = tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_random_exponential(multiplier=0.1, max=10),
        retry=tenacity.retry_if_exception_type(ConnectionError),
        reraise=True,
    )(work)
    bench.compare(
        "retry, succeeding call (decorated)",
        {
            "scalepatterns @retry(...)": ours_retry,
            "tenacity @retry(...)": bare_tenacity,
            "bare call (floor)": work,
        },
        baseline="tenacity @retry(...)",
        number=20_000,
        target="report",
        note="ours runs the first attempt inline and enters tenacity only after a failure",
    )

    endpoints = [f"10.0.0.{i}:8080" for i in range(8)]
    balancers = {
        name: LoadBalancer(endpoints, name, listeners=quiet)
        for name in ("round_robin", "weighted_round_robin", "least_connections", "power_of_two")
    }
    hashed = LoadBalancer(endpoints, "consistent_hash", listeners=quiet)
    keys = [f"user-{i}" for i in range(1024)]
    position = [0]

    def by_key() -> None:
        position[0] = (position[0] + 1) & 1023
        with hashed.pick(keys[position[0]]):
            pass

    def picker(lb: LoadBalancer[str]) -> object:
        def pick() -> None:
            with lb.pick():
                pass

        return pick

    index = [0]

    def bare_cycle() -> None:
        index[0] = (index[0] + 1) % 8
        _ = endpoints[index[0]]

    candidates = {f"lb.pick() {name}": picker(lb) for name, lb in balancers.items()}
    candidates["lb.pick(key) consistent_hash"] = by_key
    candidates["list index round-robin (floor)"] = bare_cycle
    bench.compare(
        "load balancer pick + release (8 endpoints)",
        candidates,  # type: ignore[arg-type]
        baseline="list index round-robin (floor)",
        number=20_000,
        target="report",
    )

    from tests.unit.resilience.test_chaos import (
        Fleet,
        p99,
        resilient_client,
        run_sync,
        simulate,
    )

    fleet = Fleet()
    names = list(fleet.instances)
    rr = iter(range(10**9))
    naive_rate, naive_latencies = simulate(fleet, lambda: fleet.call(names[next(rr) % 3]))
    client = resilient_client(Fleet())
    rate, latencies = run_sync(client)
    bench.record(
        "chaos scenario: 3 instances (one failing 50%, one 2 s slow), 2000 calls, simulated time",
        {
            "naive success rate": round(naive_rate, 4),
            "naive p99 latency (s)": round(p99(naive_latencies), 3),
            "resilient success rate": round(rate, 4),
            "resilient p99 latency (s)": round(p99(latencies), 3),
            "resilient max latency (s)": round(max(latencies), 3),
            "calls served by the slow instance": client.fleet.instances["slow"].served,
        },
        target="success > 99%, p99 < 1.0 s timeout",
    )
    random.seed()
