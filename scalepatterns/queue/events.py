"""Events the queue block emits (see `scalepatterns.events`)."""

from __future__ import annotations

from dataclasses import dataclass

from scalepatterns.events import Event

__all__ = [
    "MessageDeadLettered",
    "MessageDuplicate",
    "MessageHandled",
    "MessagePublished",
    "MessageRetried",
    "Reconnected",
]


@dataclass(frozen=True, slots=True)
class MessagePublished(Event):
    """`count` messages to queue/exchange `source` were confirmed by the broker."""

    count: int


@dataclass(frozen=True, slots=True)
class MessageHandled(Event):
    """A handler returned for a message of queue `source` on its `attempt`-th try."""

    attempt: int
    seconds: float


@dataclass(frozen=True, slots=True)
class MessageRetried(Event):
    """A handler failed; the message comes back after `delay` seconds as `attempt`."""

    attempt: int
    delay: float
    error: str


@dataclass(frozen=True, slots=True)
class MessageDeadLettered(Event):
    """A message was moved to the dead-letter queue after `attempt` tries."""

    attempt: int
    error: str


@dataclass(frozen=True, slots=True)
class MessageDuplicate(Event):
    """A redelivered message was already handled (dedup store) and was acked unseen."""


@dataclass(frozen=True, slots=True)
class Reconnected(Event):
    """The broker connection was re-established; `attempt` counts the connections made so
    far (2 on the first reconnect)."""

    attempt: int
