"""The ``scalepatterns`` command group, and how errors become exit codes and messages."""

from __future__ import annotations

import logging
from importlib import metadata

import click

from scalepatterns.cli import exits
from scalepatterns.cli.advise import advise
from scalepatterns.cli.outbox import outbox
from scalepatterns.cli.output import redact_text
from scalepatterns.cli.queue import dlq, queue
from scalepatterns.cli.redis_state import breaker, limiter
from scalepatterns.cli.replicas import replicas
from scalepatterns.cli.shards import shards
from scalepatterns.errors import (
    BackendUnavailable,
    ConfigurationError,
    DeadlineExceeded,
    MissingDependency,
    ScalePatternsError,
)

__all__ = ["cli", "exit_code_of", "invoke"]

_LEVELS = ("debug", "info", "warning", "error")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(metadata.version("scalepatterns"), prog_name="scalepatterns")
@click.option(
    "--log-level",
    type=click.Choice(_LEVELS),
    default="warning",
    show_default=True,
    help="What the library logs to standard error (reconnections, failing backends...).",
)
def cli(log_level: str) -> None:
    """Operate the scalepatterns blocks: dead letters, queue depth, worker advice, resharding,
    replica lag, shared limiter and breaker state, the outbox relay.

    Connection settings come from flags or the SCALEPATTERNS_REDIS_URL,
    SCALEPATTERNS_POSTGRES_URL and SCALEPATTERNS_AMQP_URL variables; passwords are never
    printed. Exit codes: 0 ok, 1 found something to act on, 2 bad arguments,
    3 a server unreachable, 4 a server error or a stopped run, 130 interrupted.
    """
    level = getattr(logging, log_level.upper())
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    # pika narrates every refused login and missing queue several times over; the
    # library's own lines and the command's error say what matters.
    logging.getLogger("pika").setLevel(level if level == logging.DEBUG else logging.CRITICAL)


for command in (advise, breaker, dlq, limiter, outbox, queue, replicas, shards):
    cli.add_command(command)


def exit_code_of(error: BaseException) -> int:
    """The exit code for an error a command raised (see `scalepatterns.cli.exits`)."""
    from scalepatterns.queue.errors import BrokerRefused

    if isinstance(error, (BrokerRefused, BackendUnavailable, DeadlineExceeded, OSError)):
        return exits.UNREACHABLE
    if isinstance(error, (ConfigurationError, MissingDependency)) and not _server_said(error):
        return exits.USAGE
    if isinstance(error, ScalePatternsError):
        return exits.FAILED
    module = type(error).__module__.partition(".")[0]
    if module == "redis":
        unreachable = ("ConnectionError", "TimeoutError", "AuthenticationError")
        names = {cls.__name__ for cls in type(error).__mro__}
        return exits.UNREACHABLE if names & set(unreachable) else exits.FAILED
    if module == "sqlalchemy":
        names = {cls.__name__ for cls in type(error).__mro__}
        return exits.UNREACHABLE if {"OperationalError", "InterfaceError"} & names else exits.FAILED
    raise error


def _server_said(error: BaseException) -> bool:
    """A ConfigurationError that reports the server's answer (a topology conflict)."""
    from scalepatterns.queue.errors import TopologyConflict

    return isinstance(error, TopologyConflict)


def _message(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return redact_text(f"{type(error).__name__}: {text[0] if text else ''}")


def invoke(argv: list[str]) -> int:
    """Run the group on `argv`; print what went wrong on standard error; return the code."""
    try:
        code = cli.main(args=argv, prog_name="scalepatterns", standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as wrong:
        wrong.show()
        return wrong.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        return exits.INTERRUPTED
    except Exception as error:  # noqa: BLE001 - exit_code_of re-raises what it does not know
        code = exit_code_of(error)
        click.echo(f"error: {_message(error)}", err=True)
        return code
    return code if isinstance(code, int) else exits.OK
