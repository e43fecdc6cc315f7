"""Where a queue lives in Redis: the keys of its streams, delay set and declaration.

Every key of a queue carries the queue's name as its hash tag, and so do the keys of its
dead-letter queue (``<queue>.dead``): a queue, its retries and its dead letters sit in
one Cluster slot, so each move between them is one atomic script. For queue ``jobs`` with
prefix ``sp:queue:``::

    sp:queue:{jobs}:meta        hash   the declaration's arguments (the queue exists)
    sp:queue:{jobs}:s           stream the messages (priority 0, or no priorities)
    sp:queue:{jobs}:s:3         stream priority 3 (queues declared with max_priority)
    sp:queue:{jobs}:delayed     zset   retries and delayed messages, scored by due time
    sp:queue:{jobs}:bound       set    exchanges with a binding to the queue
    sp:queue:{jobs}.dead:meta   ...    the dead-letter queue's keys, in the same slot
    sp:queue:exchange:{events}  hash   an exchange's bindings

Braces and ``%`` in names are escaped, so a name never moves a key to another slot.
"""

from __future__ import annotations

from dataclasses import dataclass

from scalepatterns.errors import ConfigurationError
from scalepatterns.queue.broker import dead_letter_queue

__all__ = [
    "DEFAULT_PREFIX",
    "GROUP",
    "MAX_LEVEL",
    "QueueKeys",
    "check_prefix",
    "exchange_key",
]

DEFAULT_PREFIX = "sp:queue:"
GROUP = "sp"
"""The consumer group of every queue: a queue is consumed by one group (an event bus
gives each subscriber group a queue of its own)."""
MAX_LEVEL = 255
_DEAD = ".dead"


def check_prefix(prefix: object) -> str:
    """`prefix`, or `ConfigurationError` if it is empty or holds a brace (a hash tag in
    the prefix would put every queue in one Cluster slot)."""
    if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
        raise ConfigurationError("prefix", prefix, "a non-empty key prefix without { or }")
    return prefix


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def _base(queue: str) -> str:
    """The queue whose slot `queue` lives in: itself, or the work queue of a dead-letter
    queue (``jobs.dead`` and ``jobs.dead.dead`` live with ``jobs``)."""
    base = queue
    while base.endswith(_DEAD) and len(base) > len(_DEAD):
        base = base[: -len(_DEAD)]
    return base


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue (see the module)."""

    queue: str
    root: str

    @classmethod
    def of(cls, prefix: str, queue: str) -> QueueKeys:
        base = _base(queue)
        return cls(queue, f"{prefix}{{{_escape(base)}}}{_escape(queue[len(base) :])}")

    @property
    def meta(self) -> str:
        return f"{self.root}:meta"

    @property
    def delayed(self) -> str:
        return f"{self.root}:delayed"

    @property
    def bound(self) -> str:
        return f"{self.root}:bound"

    def stream(self, level: int = 0) -> str:
        """The stream of priority `level` (0: the queue's only stream without priorities)."""
        return f"{self.root}:s" if level == 0 else f"{self.root}:s:{level}"

    def streams(self, levels: int) -> list[str]:
        """The streams of priorities 0 .. `levels` - 1."""
        return [self.stream(level) for level in range(levels)]

    def dead(self, prefix: str) -> QueueKeys:
        return QueueKeys.of(prefix, dead_letter_queue(self.queue))


def exchange_key(prefix: str, exchange: str) -> str:
    """The hash holding `exchange`'s bindings (a slot of its own)."""
    return f"{prefix}exchange:{{{_escape(exchange)}}}"
