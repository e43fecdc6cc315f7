"""Calling a flaky service: timeout, retry with a budget, circuit breaker, fallback.

Run it: ``python examples/resilience_flaky_service.py``. A fake "pricing service" answers
slowly now and then, fails a share of its calls, and then goes down completely; the
client stays fast and keeps answering. Events are printed as they happen.
"""

from __future__ import annotations

import random
import time

from scalepatterns import CircuitOpen, Listeners
from scalepatterns.resilience import (
    BreakerClosed,
    BreakerHalfOpened,
    BreakerOpened,
    CircuitBreaker,
    RetryBudget,
    RetryGaveUp,
    fallback,
    resilient,
    retry,
    timeout,
)

rng = random.Random(9)
state = {"down": False}


def pricing_service(sku: str) -> float:
    """The dependency: 15% errors, 5% slow answers; or nothing at all while down."""
    if state["down"]:
        raise ConnectionError("connection refused")
    roll = rng.random()
    if roll < 0.15:
        raise ConnectionError("connection reset by peer")
    if roll < 0.20:
        time.sleep(0.2)  # slower than our budget
    return 9.99


def main() -> None:
    listeners = Listeners()
    listeners.add(
        lambda e: print(f"     event: {e}"),
        BreakerOpened,
        BreakerHalfOpened,
        BreakerClosed,
        RetryGaveUp,
    )
    breaker = CircuitBreaker(
        name="pricing",
        window=20,
        minimum_calls=10,
        cooldown=0.3,
        trial_calls=2,
        listeners=listeners,
    )

    @resilient(
        timeout=timeout(0.05, listeners=listeners),  # per attempt
        retry=retry(
            on=(ConnectionError, TimeoutError),
            attempts=3,
            backoff=0.005,
            deadline=0.25,
            budget=RetryBudget(ratio=0.5),  # retries: at most 1 per 2 calls
            listeners=listeners,
        ),
        breaker=breaker,
        fallback=fallback(lambda exc: -1.0, on=(ConnectionError, TimeoutError, CircuitOpen)),
    )
    def price(sku: str) -> float:
        return pricing_service(sku)

    for phase, down, calls in (("flaky", False, 60), ("down", True, 60), ("back up", False, 40)):
        state["down"] = down
        started = time.perf_counter()
        answers = [price(f"sku-{i}") for i in range(calls)]
        elapsed = time.perf_counter() - started
        print(
            f"{phase:>8}: {answers.count(9.99)}/{calls} real prices, "
            f"{answers.count(-1.0)} fallbacks, {elapsed / calls * 1000:.1f} ms per call, "
            f"breaker {breaker.state}"
        )
        if phase == "down":
            time.sleep(0.35)  # the service comes back; the open period passes


if __name__ == "__main__":
    main()
