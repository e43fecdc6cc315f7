"""``scalepatterns queue depth`` and ``scalepatterns dlq list|inspect|redrive`` (RabbitMQ)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from scalepatterns.cli import exits
from scalepatterns.cli.output import emit, fields, json_option, jsonable, table
from scalepatterns.cli.settings import amqp_options, broker
from scalepatterns.queue.broker import dead_letter_queue
from scalepatterns.queue.deadletters import DeadLetters, DeadMessage

__all__ = ["DeadLetterFilter", "dlq", "queue"]

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
def queue() -> None:
    """Work queues on RabbitMQ."""


@queue.command()
@click.argument("name", metavar="QUEUE")
@amqp_options
@json_option
def depth(name: str, amqp_url: str, timeout: float, as_json: bool) -> int:
    """Messages ready in QUEUE and in its dead-letter queue (0 for a queue that does not exist)."""
    with broker(amqp_url, timeout) as rabbit:
        data = {
            "queue": name,
            "ready": rabbit.depth(name),
            "dead_letter_queue": dead_letter_queue(name),
            "dead_letters": rabbit.depth(dead_letter_queue(name)),
        }
    emit(
        as_json,
        data,
        lambda: fields(
            [(data["queue"], data["ready"]), (data["dead_letter_queue"], data["dead_letters"])]
        ),
    )
    return exits.OK


@click.group()
def dlq() -> None:
    """Dead letters of a work queue: list, inspect, re-drive."""


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters a command acts on: every given criterion must hold."""

    ids: tuple[str, ...] = ()
    type: str | None = None
    error_type: str | None = None
    grep: str | None = None

    def __call__(self, message: DeadMessage) -> bool:
        return (
            (not self.ids or message.id in self.ids)
            and (self.type is None or message.type == self.type)
            and (self.error_type is None or message.error_type == self.error_type)
            and (self.grep is None or self.grep in (message.error_message or ""))
        )


def _filters(f: F) -> F:
    for option in reversed(
        [
            click.option("--id", "ids", multiple=True, help="Only this message id (repeatable)."),
            click.option("--type", "message_type", help="Only messages of this type."),
            click.option("--error-type", help="Only this error class, e.g. ValueError."),
            click.option("--grep", help="Only errors whose message contains this text."),
            click.option(
                "--scan",
                type=click.IntRange(min=1),
                default=10_000,
                show_default=True,
                help="Look at most at this many dead letters (they are held, then put back).",
            ),
        ]
    ):
        f = option(f)
    return f


def _matching(
    dead: DeadLetters, where: DeadLetterFilter, scan: int
) -> tuple[int, list[DeadMessage], list[DeadMessage]]:
    """(dead letters in the queue, those looked at, those matching `where`)."""
    total = dead.count()
    looked = dead.inspect(limit=min(total, scan)) if total else []
    return total, looked, [m for m in looked if where(m)]


@dataclass(frozen=True)
class _Found:
    """The dead letters `dlq list` and `dlq inspect` show, and the counts behind them."""

    queue: str
    dead_letter_queue: str
    total: int
    scanned: int
    matching: int
    shown: list[DeadMessage]

    def data(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "dead_letter_queue": self.dead_letter_queue,
            "total": self.total,
            "scanned": self.scanned,
            "matching": self.matching,
            "messages": messages,
        }

    def tally(self) -> str:
        return _tally(
            self.dead_letter_queue, self.total, self.scanned, self.matching, len(self.shown)
        )


def _find(
    name: str, where: DeadLetterFilter, scan: int, limit: int, *, amqp_url: str, timeout: float
) -> _Found:
    """The first `limit` of QUEUE's dead letters matching `where` among the first `scan`."""
    with broker(amqp_url, timeout) as rabbit:
        dead = DeadLetters(rabbit, name)
        total, looked, matching = _matching(dead, where, scan)
    return _Found(name, dead.name, total, len(looked), len(matching), matching[:limit])


def _summary(message: DeadMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "type": message.type,
        "error_type": message.error_type,
        "error_message": message.error_message,
        "attempts": message.attempts,
    }


@dlq.command("list")
@click.argument("name", metavar="QUEUE")
@_filters
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True)
@amqp_options
@json_option
def list_(
    *,
    name: str,
    ids: tuple[str, ...],
    message_type: str | None,
    error_type: str | None,
    grep: str | None,
    scan: int,
    limit: int,
    amqp_url: str,
    timeout: float,
    as_json: bool,
) -> int:
    """One line per dead letter of QUEUE: id, type, error, attempts (nothing is removed)."""
    where = DeadLetterFilter(ids, message_type, error_type, grep)
    found = _find(name, where, scan, limit, amqp_url=amqp_url, timeout=timeout)

    def human() -> str:
        rows = [
            [m.id, m.type, m.error_type, m.attempts, _short(m.error_message, 60)]
            for m in found.shown
        ]
        head = table(["id", "type", "error", "attempts", "message"], rows) + "\n" if rows else ""
        return head + found.tally()

    emit(as_json, found.data([_summary(m) for m in found.shown]), human)
    return exits.OK


@dlq.command()
@click.argument("name", metavar="QUEUE")
@_filters
@click.option("--limit", type=click.IntRange(min=0), default=5, show_default=True)
@amqp_options
@json_option
def inspect(
    *,
    name: str,
    ids: tuple[str, ...],
    message_type: str | None,
    error_type: str | None,
    grep: str | None,
    scan: int,
    limit: int,
    amqp_url: str,
    timeout: float,
    as_json: bool,
) -> int:
    """Dead letters of QUEUE in full: body and whole error (nothing is removed)."""
    where = DeadLetterFilter(ids, message_type, error_type, grep)
    found = _find(name, where, scan, limit, amqp_url=amqp_url, timeout=timeout)

    def human() -> str:
        blocks = [
            fields(
                [
                    ("id", m.id),
                    ("type", m.type),
                    ("attempts", m.attempts),
                    ("error", f"{m.error_type}: {m.error_message}"),
                    ("body", json.dumps(jsonable(m.body), indent=2)),
                ]
            )
            for m in found.shown
        ]
        return "\n\n".join([*blocks, found.tally()])

    emit(as_json, found.data([{**_summary(m), "body": m.body} for m in found.shown]), human)
    return exits.OK


@dlq.command()
@click.argument("name", metavar="QUEUE")
@_filters
@click.option("--limit", type=click.IntRange(min=1), help="Move at most this many.")
@click.option("--dry-run", is_flag=True, help="Say what would move; move nothing.")
@amqp_options
@json_option
def redrive(
    *,
    name: str,
    ids: tuple[str, ...],
    message_type: str | None,
    error_type: str | None,
    grep: str | None,
    scan: int,
    limit: int | None,
    dry_run: bool,
    amqp_url: str,
    timeout: float,
    as_json: bool,
) -> int:
    """Move dead letters of QUEUE back to it as fresh first attempts.

    Each one is published (confirmed by the broker) before it leaves the dead-letter
    queue: a crash midway duplicates, never loses. With --dry-run, exits 1 when some
    would move.
    """
    where = DeadLetterFilter(ids, message_type, error_type, grep)
    with broker(amqp_url, timeout) as rabbit:
        dead = DeadLetters(rabbit, name)
        if dry_run:
            _, _, matching = _matching(dead, where, scan)
            chosen = matching[:limit] if limit is not None else matching
            moved, ids_moved = len(chosen), [m.id for m in chosen]
        else:
            ids_moved = []

            def choose(message: DeadMessage) -> bool:
                if where(message):
                    ids_moved.append(message.id)
                    return True
                return False

            moved = dead.redrive(limit, where=choose)
        left = dead.count()
    data = {
        "queue": name,
        "dry_run": dry_run,
        "moved": moved,
        "ids": ids_moved,
        "dead_letters_left": left,
    }
    verb = "would move" if dry_run else "moved"
    emit(
        as_json,
        data,
        lambda: (
            f"{verb} {moved} dead letter(s) back to {name}"
            + (f": {', '.join(str(i) for i in ids_moved[:20])}" if ids_moved else "")
            + ("..." if len(ids_moved) > 20 else "")
            + f"\n{left} left in {dead.name}"
        ),
    )
    return exits.FOUND if dry_run and moved else exits.OK


def _tally(dlq_name: str, total: int, looked: int, matching: int, shown: int) -> str:
    text = f"{total} dead letter(s) in {dlq_name}"
    if looked < total:
        text += f", {looked} looked at (--scan)"
    return text + f"; {matching} match, {shown} shown"


def _short(text: str | None, width: int) -> str | None:
    if text is None or len(text) <= width:
        return text
    return text[: width - 3] + "..."
