"""Events the outbox relays emit (see `scalepatterns.events`); `source` is the outbox's name."""

from __future__ import annotations

from dataclasses import dataclass

from scalepatterns.events import Event

__all__ = ["OutboxRelayFailed", "OutboxRelayed", "OutboxRowsRefused"]


@dataclass(frozen=True, slots=True)
class OutboxRelayed(Event):
    """`count` rows were published (confirmed by the broker) and deleted."""

    count: int


@dataclass(frozen=True, slots=True)
class OutboxRowsRefused(Event):
    """The broker refused `count` rows for good; they were moved to ``<name>_dead``."""

    count: int


@dataclass(frozen=True, slots=True)
class OutboxRelayFailed(Event):
    """A batch failed (the broker or the database); its rows stay and are tried again."""

    error: str
