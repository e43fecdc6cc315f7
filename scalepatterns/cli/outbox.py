"""``scalepatterns outbox relay``: a relay process for a transactional outbox."""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING

import click

from scalepatterns.cli import exits
from scalepatterns.cli.output import emit, json_option
from scalepatterns.cli.settings import amqp_options, broker, engine, postgres_option
from scalepatterns.events import Event, Listeners

if TYPE_CHECKING:
    from scalepatterns.outbox import OutboxRelay

__all__ = ["outbox"]


@click.group()
def outbox() -> None:
    """The transactional outbox."""


@outbox.command()
@postgres_option
@amqp_options
@click.option("--table", default="sp_outbox", show_default=True, help="The outbox's name.")
@click.option(
    "--events",
    "exchange",
    metavar="EXCHANGE",
    help="Publish through an EventBus on this exchange (rows' targets are event types); "
    "default: a Producer (targets are queues).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--poll-interval", type=float, default=1.0, show_default=True)
@click.option("--max-backoff", type=float, default=5.0, show_default=True)
@click.option("--drain", is_flag=True, help="Publish what is there now, then exit.")
@json_option
def relay(
    *,
    postgres_url: str,
    amqp_url: str,
    timeout: float,
    table: str,
    exchange: str | None,
    batch_size: int,
    poll_interval: float,
    max_backoff: float,
    drain: bool,
    as_json: bool,
) -> int:
    """Publish the outbox's committed rows to RabbitMQ and delete them once confirmed.

    Runs until Ctrl-C or SIGTERM (it finishes the batch in progress), woken by
    LISTEN/NOTIFY on PostgreSQL and polling elsewhere; with --drain, publishes what is
    there and exits. Run several for more throughput: they never publish the same row at
    once. Prints how many rows it published.
    """
    from scalepatterns.outbox import Outbox, OutboxRelay
    from scalepatterns.outbox.events import OutboxRelayed, OutboxRowsRefused
    from scalepatterns.queue import EventBus, Producer

    counts = {"published": 0, "refused": 0}
    listeners = Listeners()

    def count(event: Event) -> None:
        if isinstance(event, OutboxRelayed):
            counts["published"] += event.count
        elif isinstance(event, OutboxRowsRefused):
            counts["refused"] += event.count

    listeners.add(count, OutboxRelayed, OutboxRowsRefused)
    database = engine(postgres_url, "--postgres-url")
    try:
        with broker(amqp_url, timeout) as rabbit:
            publisher = (
                Producer(rabbit) if exchange is None else EventBus(rabbit, exchange=exchange)
            )
            worker = OutboxRelay(
                Outbox(name=table),
                database,
                publisher,
                batch_size=batch_size,
                poll_interval=poll_interval,
                max_backoff=max_backoff,
                listeners=listeners,
            )
            if drain:
                worker.drain()
            else:
                _until_signalled(worker, table)
    finally:
        database.dispose()
    data = {"table": table, **counts}
    emit(
        as_json,
        data,
        lambda: (
            f"published {counts['published']} row(s) of {table}"
            + (f"; {counts['refused']} refused, moved to {table}_dead" if counts["refused"] else "")
        ),
    )
    return exits.OK


def _until_signalled(worker: OutboxRelay, table: str) -> None:
    """Run `worker` in the foreground until SIGINT or SIGTERM."""

    def stop(_signum: int, _frame: FrameType | None) -> None:
        worker.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"relaying {table} (Ctrl-C or SIGTERM to stop)", file=sys.stderr, flush=True)
    try:
        worker.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
