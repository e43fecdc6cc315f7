"""``scalepatterns limiter peek`` and ``scalepatterns breaker status``: shared state in Redis,
read without changing it."""

from __future__ import annotations

import datetime

import click

from scalepatterns.backpressure.ratelimiter import RateLimiter
from scalepatterns.cli import exits
from scalepatterns.cli.output import emit, fields, json_option
from scalepatterns.cli.settings import redis_option
from scalepatterns.resilience.shared_state import RedisBreakerState

__all__ = ["breaker", "limiter"]


@click.group()
def limiter() -> None:
    """Rate limiters shared through Redis."""


@limiter.command()
@click.argument("key")
@click.option("--rate", required=True, help="The limiter's rate, e.g. 100/minute.")
@click.option("--burst", type=int, help="The limiter's burst (GCRA; default the rate's limit).")
@click.option(
    "--algorithm",
    type=click.Choice(["gcra", "sliding-window", "fixed-window"]),
    default="gcra",
    show_default=True,
)
@click.option("--prefix", default="sp:rl:", show_default=True, help="The limiter's key prefix.")
@redis_option
@json_option
def peek(
    *,
    key: str,
    rate: str,
    burst: int | None,
    algorithm: str,
    prefix: str,
    redis_url: str,
    as_json: bool,
) -> int:
    """What KEY has left now, and when it is back to its full allowance; spends nothing.

    Give the limiter's own settings (rate, burst, algorithm, prefix): Redis holds the
    key's state, the settings say what it means.
    """
    rl = RateLimiter(rate, burst, algorithm=algorithm, redis=redis_url, prefix=prefix)
    try:
        decision = rl.peek(key)
        redis_key = f"{prefix}{{{key}}}"
    finally:
        rl.close()
    data = {
        "key": key,
        "redis_key": redis_key,
        "allowed": decision.allowed,
        "remaining": decision.remaining,
        "burst": rl.burst,
        "retry_after": decision.retry_after,
        "reset_after": decision.reset_after,
    }
    emit(
        as_json,
        data,
        lambda: fields(
            [
                ("key", f"{key} ({redis_key})"),
                ("remaining", f"{decision.remaining} of {rl.burst}"),
                (
                    "next call",
                    "allowed" if decision.allowed else f"refused for {decision.retry_after:.3f}s",
                ),
                ("full again in", f"{decision.reset_after:.3f}s"),
            ]
        ),
    )
    return exits.OK


@click.group()
def breaker() -> None:
    """Circuit breakers sharing their state through Redis."""


@breaker.command()
@click.argument("name")
@click.option(
    "--prefix", default="scalepatterns:breaker:", show_default=True, help="The state's key prefix."
)
@redis_option
@json_option
def status(name: str, prefix: str, redis_url: str, as_json: bool) -> int:
    """Whether breaker NAME is open for every process, and until when. Exits 1 when open.

    Only "open until" is shared: while it is not open, each process's breaker is closed or
    half-open on its own.
    """
    state = RedisBreakerState(redis_url, prefix=prefix)
    try:
        opened = state.open_until(name)
    finally:
        state.close()
    utc = datetime.timezone.utc
    until = None if opened is None else datetime.datetime.fromtimestamp(opened[0], utc)
    data = {
        "name": name,
        "redis_key": prefix + name,
        "open": opened is not None,
        "open_until": None if until is None else until.isoformat(),
        "seconds_left": None if opened is None else opened[1],
    }
    shown = (
        f"open until {until:%Y-%m-%d %H:%M:%S} UTC ({opened[1]:.1f}s left)"
        if until is not None and opened is not None
        else "not open (each process is closed or half-open on its own)"
    )
    emit(as_json, data, lambda: fields([("breaker", f"{name} ({prefix}{name})"), ("state", shown)]))
    return exits.FOUND if opened is not None else exits.OK
