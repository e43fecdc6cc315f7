"""``scalepatterns advise``: how many workers keep a queue's wait under a target."""

from __future__ import annotations

import click

from scalepatterns.backpressure.advisor import advise_workers
from scalepatterns.cli.output import emit, fields, json_option

__all__ = ["advise"]


@click.command()
@click.option("--arrival-rate", type=float, required=True, help="Messages per second arriving.")
@click.option(
    "--service-time", type=float, required=True, help="Mean seconds a worker spends on one."
)
@click.option(
    "--target-wait", type=float, required=True, help="Mean seconds a message may wait, at most."
)
@click.option("--max-workers", type=int, default=10_000, show_default=True, help="Give up above.")
@json_option
def advise(
    *, arrival_rate: float, service_time: float, target_wait: float, max_workers: int, as_json: bool
) -> int:
    """The fewest workers for which the mean queueing wait stays under --target-wait.

    The queue is modelled as M/M/c (Poisson arrivals, exponential service times: a cautious
    model for most job queues). Example: scalepatterns advise --arrival-rate 200
    --service-time 0.05 --target-wait 0.005
    """
    advice = advise_workers(arrival_rate, service_time, target_wait, max_workers=max_workers)
    data = {
        "workers": advice.workers,
        "offered_load": advice.offered_load,
        "utilization": advice.utilization,
        "wait_probability": advice.wait_probability,
        "expected_wait": advice.expected_wait,
        "target_wait": target_wait,
    }
    emit(
        as_json,
        data,
        lambda: fields(
            [
                ("workers", advice.workers),
                ("offered load", f"{advice.offered_load:.2f} workers busy on average"),
                ("utilization", f"{advice.utilization:.1%} of each worker's time"),
                ("wait probability", f"{advice.wait_probability:.1%} of messages wait at all"),
                (
                    "expected wait",
                    f"{advice.expected_wait * 1000:.2f} ms (target {target_wait * 1000:g} ms)",
                ),
            ]
        ),
    )
    return 0
