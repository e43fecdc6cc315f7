"""Connection settings: flags, or the same ``SCALEPATTERNS_*_URL`` variables the tests read.

Passwords never appear in what the commands print: URLs are shown redacted, and the
error texts of drivers pass through `redact_text`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from scalepatterns._checks import seconds
from scalepatterns.errors import ConfigurationError

__all__ = [
    "AMQP_ENV",
    "POSTGRES_ENV",
    "REDIS_ENV",
    "amqp_options",
    "broker",
    "engine",
    "named_urls",
    "postgres_option",
    "redis_option",
]

F = TypeVar("F", bound=Callable[..., Any])

REDIS_ENV = "SCALEPATTERNS_REDIS_URL"
POSTGRES_ENV = "SCALEPATTERNS_POSTGRES_URL"
AMQP_ENV = "SCALEPATTERNS_AMQP_URL"
REDIS_DEFAULT = "redis://127.0.0.1:6379/0"
AMQP_DEFAULT = "amqp://guest:guest@127.0.0.1:5672/%2F"


def redis_option(f: F) -> F:
    return click.option(
        "--redis-url",
        envvar=REDIS_ENV,
        show_envvar=True,
        default=REDIS_DEFAULT,
        metavar="URL",
        help=f"Redis (redis://, rediss://, unix://, redis+sentinel://); default {REDIS_DEFAULT}.",
    )(f)


def postgres_option(f: F) -> F:
    return click.option(
        "--postgres-url",
        envvar=POSTGRES_ENV,
        show_envvar=True,
        required=True,
        metavar="URL",
        help="The database (a SQLAlchemy URL; postgresql:// uses psycopg 3).",
    )(f)


def amqp_options(f: F) -> F:
    f = click.option(
        "--timeout",
        type=float,
        default=10.0,
        show_default=True,
        help="Seconds to wait for the broker's connection.",
    )(f)
    return click.option(
        "--amqp-url",
        envvar=AMQP_ENV,
        show_envvar=True,
        default=AMQP_DEFAULT,
        metavar="URL",
        help="RabbitMQ (amqp://user:password@host:port/vhost); default the local guest.",
    )(f)


def named_urls(
    _ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    """``NAME=URL`` options (``--shard a=postgresql://...``) as ``{name: url}``."""
    named: dict[str, str] = {}
    for value in values:
        name, equals, url = value.partition("=")
        if not equals or not name or not url:
            raise click.BadParameter(f"expected NAME=URL, not {value.split('=')[0]!r}...")
        if name in named:
            raise click.BadParameter(f"{name!r} is given twice")
        named[name] = url
    return named


def engine(url: str, parameter: str, *, connect_timeout: float = 10.0) -> Any:
    """A SQLAlchemy engine for `url`; ``postgresql://`` and ``postgres://`` use psycopg 3."""
    from scalepatterns._deps import require

    sa = require("sqlalchemy", extra="sqlalchemy", feature="this command")
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgres", "postgresql"):
        url = f"postgresql+psycopg://{rest}"
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(parameter, _shown(url), "a SQLAlchemy database URL") from exc
    options: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        options["connect_args"] = {"connect_timeout": max(1, round(connect_timeout))}
    try:
        return sa.create_engine(parsed, **options)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise ConfigurationError(parameter, _shown(url), f"a usable database URL ({exc})") from exc


@contextlib.contextmanager
def broker(url: str, timeout: float) -> Iterator[Any]:
    """A `RabbitMQBroker` for `url`, closed on the way out."""
    from scalepatterns.queue import RabbitMQBroker

    seconds("timeout", timeout, positive=True)
    rabbit = RabbitMQBroker(url, connect_timeout=timeout)
    try:
        yield rabbit
    finally:
        rabbit.close()


def _shown(url: str) -> str:
    from scalepatterns._redis_url import redact

    return redact(url)
