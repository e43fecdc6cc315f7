"""Spreading calls over instances of a service with a client-side `LoadBalancer`.

Run it: ``python examples/resilience_load_balancing.py``. Three fake instances: one
healthy, one slow, one that breaks halfway. Each strategy spreads 600 calls; passive
health ejects the broken instance and an active health check re-admits it once fixed.
"""

from __future__ import annotations

from scalepatterns import FakeClock, Listeners
from scalepatterns.resilience import EndpointEjected, EndpointReadmitted, LoadBalancer

LATENCY = {"api-1:8000": 0.010, "api-2:8000": 0.050, "api-3:8000": 0.012}


def spread(strategy: str, clock: FakeClock, listeners: Listeners) -> None:
    broken = {"api-3:8000": False}
    lb = LoadBalancer(
        {"api-1:8000": 3, "api-2:8000": 1, "api-3:8000": 2},  # weights: instance sizes
        strategy,
        failure_threshold=3,
        cooldown=5.0,
        health_check=lambda endpoint: not broken.get(endpoint, False),
        clock=clock,
        listeners=listeners,
    )
    served: dict[str, int] = dict.fromkeys(LATENCY, 0)
    failures = 0

    def call(endpoint: str) -> None:
        served[endpoint] += 1
        clock.advance(LATENCY[endpoint])  # simulated latency
        if broken.get(endpoint):
            raise ConnectionError(f"{endpoint} is broken")

    for i in range(600):
        if i == 300:
            broken["api-3:8000"] = True  # breaks halfway
        if i == 500:
            broken["api-3:8000"] = False  # fixed; the next health check re-admits it
            lb.check_health()
        try:
            with lb.pick(key=f"user-{i % 50}") as endpoint:
                call(endpoint)
        except ConnectionError:
            failures += 1
        clock.advance(0.001)  # the next request arrives
    print(f"{strategy:>22}: served {served}, failed calls {failures}")


def main() -> None:
    listeners = Listeners()
    listeners.add(
        lambda e: print(f"{'':>24}{type(e).__name__}: {e.endpoint}"),  # type: ignore[attr-defined]
        EndpointEjected,
        EndpointReadmitted,
    )
    for strategy in (
        "round_robin",
        "weighted_round_robin",
        "least_connections",
        "consistent_hash",
        "power_of_two",
    ):
        spread(strategy, FakeClock(), listeners)


if __name__ == "__main__":
    main()
