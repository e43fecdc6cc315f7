"""`Unsent`: the invalidations a shared backend has not seen yet, kept until it answers.

An invalidation made while Redis is unreachable (`fn.invalidate`, `invalidate_tags`,
`invalidate_namespace`) drops this process's memory tier at once, but Redis would go on
serving the old entries to every process after the outage. So the cache keeps what it
could not send here and sends it before it reads Redis again (see `Cache.head`), and a
background sender retries until Redis takes it.

Bounded: past `limit` keys and tags, they collapse into one namespace bump, which drops
every entry of the namespace: more than was asked, never less.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from scalepatterns._steps import Flow

__all__ = ["Batch", "Unsent", "send"]

LIMIT = 10_000


@dataclass
class Batch:
    """Invalidations taken out to be sent; given back whole if sending fails."""

    bump: bool = False
    keys: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return self.bump or bool(self.keys) or bool(self.tags)


class Unsent:
    """Thread-safe bookkeeping of unsent invalidations, and of who is sending them.

    The sending itself is the cache's (the `send` flow below moves the bytes).
    """

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._waiting = Batch()
        self._out = 0  # batches taken and not yet finished
        self.send_lock = threading.Lock()  # one sync sender at a time
        self.asending: asyncio.Future[None] | None = None  # the asyncio sender at work
        self.thread: threading.Thread | None = None  # the background sender (sync)
        self.task: asyncio.Task[None] | None = None  # the background sender (asyncio)

    def __len__(self) -> int:
        """Keys and tags waiting or being sent (a waiting namespace bump counts one)."""
        waiting = self._waiting
        return len(waiting.keys) + len(waiting.tags) + waiting.bump + self._out

    def add(
        self, *, keys: Iterable[str] = (), tags: Iterable[str] = (), bump: bool = False
    ) -> None:
        """Keep shared keys to delete, tag names to pop, or a namespace bump."""
        with self._lock:
            self._merge(Batch(bump, set(keys), set(tags)))

    def _merge(self, batch: Batch) -> None:
        waiting = self._waiting
        waiting.bump |= batch.bump
        waiting.keys |= batch.keys
        waiting.tags |= batch.tags
        if len(waiting.keys) + len(waiting.tags) > self.limit:
            self._waiting = Batch(bump=True)

    def take(self) -> Batch:
        """Everything waiting (possibly nothing); `done` or `give_back` must follow."""
        with self._lock:
            batch, self._waiting = self._waiting, Batch()
            self._out += 1
            return batch

    def done(self) -> None:
        """The taken batch reached the backend."""
        with self._lock:
            self._out -= 1

    def give_back(self, batch: Batch) -> None:
        """The taken batch (with any keys found on the way) did not reach the backend."""
        with self._lock:
            self._out -= 1
            self._merge(batch)


# The I/O, one flow for a sync and an asyncio backend (see `_steps`). Tags are popped first
# and their keys join the batch, so a failure after the pop loses nothing.


def send(backend: Any, batch: Batch, version_key: str) -> Flow[int | None]:
    """Send `batch` to `backend`; the new namespace version if it was bumped."""
    if batch.tags and hasattr(backend, "pop_tagged"):
        batch.keys.update((yield backend.pop_tagged, (sorted(batch.tags),)))
    batch.tags.clear()
    if batch.keys:
        yield backend.delete, tuple(sorted(batch.keys))
    if not batch.bump:
        return None
    version = yield backend.incr, (version_key,)
    return int(version)
