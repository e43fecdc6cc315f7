"""Chaos scenario: three instances of a dependency, one failing half its calls, one slow.

Latency is simulated on a fake clock (each instance "takes" its latency by advancing it,
and gives up at the caller's deadline as a client with its own I/O timeout would), so the
figures are exact and no test waits. Behind balancer + breaker + retry + timeout the
success rate stays above 99% and the p99 latency under the overall timeout; a naive
client (round-robin, no policy) falls well below.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from scalepatterns import CircuitOpen, DeadlineExceeded, FakeClock, Listeners
from scalepatterns.resilience import (
    CircuitBreaker,
    LoadBalancer,
    NoHealthyEndpoint,
    PowerOfTwoChoices,
    Retry,
    Timeout,
    remaining,
    retry,
    timeout,
)

CALLS = 2000
BUDGET = 1.0  # the overall timeout of one logical call
PER_ATTEMPT = 0.25


@dataclass
class Instance:
    name: str
    latency: float
    failure_rate: float
    rng: random.Random
    served: int = 0

    def outcome(self) -> tuple[float, bool]:
        """(seconds taken, failed?), cut at the caller's deadline."""
        self.served += 1
        failed = self.rng.random() < self.failure_rate
        left = remaining()
        if left is not None and self.latency > left:
            return max(left, 0.0), True
        return self.latency, failed


@dataclass
class Fleet:
    clock: FakeClock = field(default_factory=FakeClock)
    rng: random.Random = field(default_factory=lambda: random.Random(2024))

    def __post_init__(self) -> None:
        self.instances = {
            "healthy": Instance("healthy", 0.010, 0.0, self.rng),
            "flaky": Instance("flaky", 0.010, 0.5, self.rng),
            "slow": Instance("slow", 2.000, 0.0, self.rng),
        }

    def call(self, name: str) -> str:
        taken, failed = self.instances[name].outcome()
        self.clock.advance(taken)
        if failed:
            if remaining() is not None and remaining() <= 0:  # type: ignore[operator]
                raise DeadlineExceeded(PER_ATTEMPT, name)
            raise ConnectionError(f"{name} failed")
        return name

    async def acall(self, name: str) -> str:
        await asyncio.sleep(0)
        return self.call(name)


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[int(len(ordered) * 0.99) - 1]


@dataclass
class Client:
    fleet: Fleet
    lb: LoadBalancer[str]
    breakers: dict[str, CircuitBreaker]
    retry: Retry
    attempt_timeout: Timeout
    overall: Timeout


def resilient_client(fleet: Fleet) -> Client:
    clock, quiet = fleet.clock, Listeners()
    lb = LoadBalancer(
        list(fleet.instances),
        PowerOfTwoChoices(random.Random(7)),
        failure_threshold=3,
        eject_failure_rate=0.3,
        failure_window=10,
        min_calls=5,
        cooldown=5.0,
        clock=clock,
        listeners=quiet,
    )
    breakers = {
        name: CircuitBreaker(
            name=name, window=10, minimum_calls=5, cooldown=5.0, clock=clock, listeners=quiet
        )
        for name in fleet.instances
    }
    policy = retry(
        on=(ConnectionError, DeadlineExceeded, CircuitOpen, NoHealthyEndpoint),
        attempts=5,
        backoff=0.005,
        max_backoff=0.05,
        rng=random.Random(11),
        clock=clock,
        listeners=quiet,
    )
    return Client(
        fleet,
        lb,
        breakers,
        policy,
        timeout(PER_ATTEMPT, mode="inline", clock=clock, listeners=quiet),
        timeout(BUDGET, mode="inline", clock=clock, listeners=quiet),
    )


def run_sync(client: Client) -> tuple[float, list[float]]:
    fleet = client.fleet

    def attempt() -> str:
        with client.lb.pick() as name:
            return client.breakers[name].call(client.attempt_timeout.call, fleet.call, name)

    return simulate(fleet, lambda: client.overall.call(client.retry.call, attempt))


def run_async(client: Client) -> tuple[float, list[float]]:
    fleet = client.fleet

    async def attempt() -> str:
        async with client.lb.pick() as name:
            return await client.breakers[name].acall(
                client.attempt_timeout.acall, fleet.acall, name
            )

    async def many() -> tuple[float, list[float]]:
        successes, latencies = 0, []
        for _ in range(CALLS):
            start = fleet.clock.monotonic()
            try:
                await client.overall.acall(client.retry.acall, attempt)
                successes += 1
            except Exception:
                pass
            latencies.append(fleet.clock.monotonic() - start)
            fleet.clock.advance(0.01)
        return successes / CALLS, latencies

    return asyncio.run(many())


def simulate(fleet: Fleet, one_call: Callable[[], object]) -> tuple[float, list[float]]:
    successes, latencies = 0, []
    for _ in range(CALLS):
        start = fleet.clock.monotonic()
        try:
            one_call()
            successes += 1
        except Exception:
            pass
        latencies.append(fleet.clock.monotonic() - start)
        fleet.clock.advance(0.01)  # the next request arrives
    return successes / CALLS, latencies


def test_naive_client_suffers() -> None:
    fleet = Fleet()
    names = list(fleet.instances)
    counter = iter(range(10**9))
    success_rate, latencies = simulate(fleet, lambda: fleet.call(names[next(counter) % 3]))
    assert success_rate < 0.9  # the flaky instance fails a sixth of all calls
    assert p99(latencies) >= 2.0  # and a third of the calls wait for the slow one


def test_resilient_client_sync() -> None:
    client = resilient_client(Fleet())
    success_rate, latencies = run_sync(client)
    assert success_rate > 0.99
    assert p99(latencies) < BUDGET
    served = {name: i.served for name, i in client.fleet.instances.items()}
    assert served["slow"] < CALLS * 0.05  # the slow instance is avoided
    assert served["healthy"] > served["flaky"]


def test_resilient_client_async() -> None:
    client = resilient_client(Fleet())
    success_rate, latencies = run_async(client)
    assert success_rate > 0.99
    assert p99(latencies) < BUDGET
    assert client.fleet.instances["slow"].served < CALLS * 0.05
