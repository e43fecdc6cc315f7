"""One vocabulary across the blocks: an exported name means one object, and every duration
a public constructor takes is a finite number of seconds (NaN and infinity refused)."""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

import scalepatterns
from scalepatterns import (
    Cache,
    CircuitBreaker,
    ConcurrencyLimiter,
    OutageGuard,
    RateLimiter,
    retry,
    timeout,
)
from scalepatterns.outbox import Outbox, OutboxRelay
from scalepatterns.queue import (
    AsyncProducer,
    AsyncWorker,
    MemoryBroker,
    Producer,
    RabbitMQBroker,
    Worker,
)
from scalepatterns.resilience import LoadBalancer


def packages() -> list[str]:
    names = ["scalepatterns"]
    for info in pkgutil.walk_packages(scalepatterns.__path__, "scalepatterns."):
        if info.ispkg and ".contrib" not in info.name and ".cli" not in info.name:
            names.append(info.name)
    return names


def test_no_exported_name_means_two_objects() -> None:
    seen: dict[str, tuple[str, object]] = {}
    clashes = []
    for package in packages():
        module = importlib.import_module(package)
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            if name in seen and seen[name][1] is not value:
                clashes.append(f"{name}: {seen[name][0]} vs {package}")
            seen.setdefault(name, (package, value))
    assert clashes == []


def _broker() -> MemoryBroker:
    return MemoryBroker()


def _relay(**options: Any) -> OutboxRelay:
    return OutboxRelay(Outbox(), sa.create_engine("sqlite://"), Producer(_broker()), **options)


# (what, build(value)) for every duration a public constructor takes
DURATIONS: list[tuple[str, Callable[[float], object]]] = [
    ("Producer(confirm_timeout)", lambda v: Producer(_broker(), confirm_timeout=v)),
    ("Producer(reconnect_timeout)", lambda v: Producer(_broker(), reconnect_timeout=v)),
    ("AsyncProducer(confirm_timeout)", lambda v: AsyncProducer(_broker(), confirm_timeout=v)),  # type: ignore[arg-type]
    ("Worker(shutdown_timeout)", lambda v: Worker(_broker(), "q", print, shutdown_timeout=v)),
    ("Worker(dedup_ttl)", lambda v: Worker(_broker(), "q", print, dedup_ttl=v)),
    ("Worker(in_progress_ttl)", lambda v: Worker(_broker(), "q", print, in_progress_ttl=v)),
    (
        "AsyncWorker(shutdown_timeout)",
        lambda v: AsyncWorker(_broker(), "q", print, shutdown_timeout=v),
    ),  # type: ignore[arg-type]
    ("RabbitMQBroker(connect_timeout)", lambda v: RabbitMQBroker(connect_timeout=v)),
    ("RabbitMQBroker(blocked_timeout)", lambda v: RabbitMQBroker(blocked_timeout=v)),
    ("RabbitMQBroker(reconnect_max_delay)", lambda v: RabbitMQBroker(reconnect_max_delay=v)),
    ("CircuitBreaker(cooldown)", lambda v: CircuitBreaker(name="x", cooldown=v)),
    (
        "CircuitBreaker(slow_call_duration)",
        lambda v: CircuitBreaker(name="x", slow_call_duration=v),
    ),
    ("ConcurrencyLimiter(timeout)", lambda v: ConcurrencyLimiter(2, timeout=v)),
    ("retry(deadline)", lambda v: retry(deadline=v)),
    ("retry(backoff)", lambda v: retry(backoff=v)),
    ("timeout(seconds)", timeout),
    ("OutageGuard(cooldown)", lambda v: OutageGuard(3, v)),
    ("RateLimiter(cooldown)", lambda v: RateLimiter("5/s", cooldown=v)),
    ("Cache.memory(ttl)", lambda v: Cache.memory(ttl=v)),
    ("LoadBalancer(cooldown)", lambda v: LoadBalancer(["a"], cooldown=v)),
    ("OutboxRelay(poll_interval)", lambda v: _relay(poll_interval=v)),
    ("OutboxRelay(max_backoff)", lambda v: _relay(max_backoff=v)),
]


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
@pytest.mark.parametrize(("what", "build"), DURATIONS, ids=[d[0] for d in DURATIONS])
def test_every_duration_refuses_nan_and_infinity(
    what: str, build: Callable[[float], object], value: float
) -> None:
    with pytest.raises(ValueError) as caught:
        build(value)
    assert what.split("(")[1].rstrip(")") in str(caught.value)


def test_every_refusal_is_a_refused_with_retry_after() -> None:
    from scalepatterns import CircuitOpen, QueueFull, RateLimited, Refused
    from scalepatterns.backpressure import BulkheadFull
    from scalepatterns.resilience import NoHealthyEndpoint

    refusals = [
        RateLimited("k", 1.5),
        CircuitOpen("b", 2.0),
        QueueFull("q", 10, 3.0),
        BulkheadFull("p", 4, "full", 0.5),
        NoHealthyEndpoint("lb", None),
    ]
    for refusal in refusals:
        assert isinstance(refusal, Refused)
    assert [r.retry_after for r in refusals] == [1.5, 2.0, 3.0, 0.5, None]
