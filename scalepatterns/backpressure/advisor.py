"""How many workers keep a queue's wait under a target: Little's law and M/M/c (Erlang C)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scalepatterns.errors import ConfigurationError

__all__ = ["WorkerAdvice", "advise_workers"]


@dataclass(frozen=True, slots=True)
class WorkerAdvice:
    """The advice and the figures behind it.

    Attributes:
        workers: the number of workers to run.
        offered_load: ``arrival_rate * service_time``: workers busy on average (Little's
            law); never run fewer than this.
        utilization: the share of time each worker is busy with `workers` running.
        wait_probability: the chance a message waits at all (Erlang C).
        expected_wait: mean seconds a message waits in the queue before a worker takes it.
    """

    workers: int
    offered_load: float
    utilization: float
    wait_probability: float
    expected_wait: float


def _erlang_c(workers: int, load: float) -> float:
    """Probability of waiting in an M/M/c queue with `workers` servers and `load` erlangs."""
    blocking = 1.0  # Erlang B by its stable recurrence
    for c in range(1, workers + 1):
        blocking = load * blocking / (c + load * blocking)
    rho = load / workers
    return blocking / (1 - rho * (1 - blocking))


def advise_workers(
    arrival_rate: float,
    service_time: float,
    target_wait: float,
    *,
    max_workers: int = 10_000,
) -> WorkerAdvice:
    """The fewest workers for which the mean queueing wait is at most `target_wait`.

    Models the queue as M/M/c (Poisson arrivals, exponential service times): a cautious
    model for most job queues.

    Args:
        arrival_rate: messages per second arriving (>= 0), as measured.
        service_time: mean seconds one worker spends on a message (> 0).
        target_wait: the mean wait in the queue to stay under, in seconds (> 0).
        max_workers: give up above this many (raises `ConfigurationError`).

    ```python
    from scalepatterns.backpressure import advise_workers

    advice = advise_workers(arrival_rate=100, service_time=0.05, target_wait=0.01)
    assert advice.offered_load == 5.0 and advice.workers == 7
    assert advice.expected_wait <= 0.01
    ```
    """
    for name, value, low in (
        ("arrival_rate", arrival_rate, 0.0),
        ("service_time", service_time, None),
        ("target_wait", target_wait, None),
    ):
        bad = isinstance(value, bool) or not isinstance(value, (int, float))
        if bad or not math.isfinite(value) or (value < 0 if low is not None else value <= 0):
            accepted = "a finite number >= 0" if low is not None else "a finite number > 0"
            raise ConfigurationError(name, value, accepted)
    load = arrival_rate * service_time
    if arrival_rate == 0:
        return WorkerAdvice(1, 0.0, 0.0, 0.0, 0.0)
    workers = max(1, math.floor(load) + 1)
    while workers <= max_workers:
        probability = _erlang_c(workers, load)
        wait = probability * service_time / (workers - load)
        if wait <= target_wait:
            return WorkerAdvice(workers, load, load / workers, probability, wait)
        workers += 1
    raise ConfigurationError(
        "max_workers", max_workers, f"more workers: the offered load alone is {load:.1f}"
    )
