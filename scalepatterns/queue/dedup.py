"""Dedup stores: make a redelivered message have its effect once.

The worker marks a message id *in progress* (short TTL) before calling the handler,
*done* (long TTL) after it returned, and acks only then. So:

- a redelivery of a message that was handled (the ack was lost) finds *done* and is
  acked without running the handler again;
- a worker that crashed mid-handler leaves an *in progress* mark that expires: the
  redelivery finds it, comes back later through a delay queue, and then runs: a retry,
  never a silent drop.
"""

from __future__ import annotations

import enum
import threading
from typing import Any, Protocol

from scalepatterns._redis_url import client_from_url
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import BackendUnavailable, ConfigurationError

__all__ = ["Claim", "DedupStore", "MemoryDedupStore", "RedisDedupStore"]


class Claim(enum.Enum):
    """The answer of `DedupStore.claim`."""

    ACQUIRED = "acquired"
    """Nobody handled it: run the handler."""
    DONE = "done"
    """Already handled: ack and skip."""
    BUSY = "busy"
    """Another worker is handling it right now (or crashed doing so): try again later."""


class DedupStore(Protocol):
    """Remembers which message ids were handled.

    A `Worker` passes ``<queue>:<message id>``, so one store serves many queues and an
    event fanned out to several queues is handled once by each.
    """

    def claim(self, message_id: str, ttl: float) -> Claim:
        """Mark `message_id` in progress for `ttl` seconds unless it is done or busy."""
        ...

    def complete(self, message_id: str, ttl: float) -> None:
        """Mark `message_id` done for `ttl` seconds."""
        ...

    def release(self, message_id: str) -> None:
        """Drop an in-progress mark (the handler failed and the message will be retried)."""
        ...


# bytes, or str from a client created with decode_responses=True
_DONE = (b"done", "done")
_BUSY = (b"busy", "busy")


class MemoryDedupStore:
    """An in-process dedup store (one worker process only)."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK, max_entries: int = 1_000_000) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._marks: dict[str, tuple[bool, float]] = {}
        self._max = max_entries

    def claim(self, message_id: str, ttl: float) -> Claim:
        now = self._clock.monotonic()
        with self._lock:
            mark = self._marks.get(message_id)
            if mark is not None and mark[1] > now:
                return Claim.DONE if mark[0] else Claim.BUSY
            if len(self._marks) >= self._max:
                self._evict(now)
            self._marks[message_id] = (False, now + ttl)
            return Claim.ACQUIRED

    def complete(self, message_id: str, ttl: float) -> None:
        with self._lock:
            self._marks[message_id] = (True, self._clock.monotonic() + ttl)

    def release(self, message_id: str) -> None:
        with self._lock:
            mark = self._marks.get(message_id)
            if mark is not None and not mark[0]:
                del self._marks[message_id]

    def _evict(self, now: float) -> None:
        for key in [k for k, (_, expiry) in self._marks.items() if expiry <= now]:
            del self._marks[key]
        while len(self._marks) >= self._max:
            del self._marks[next(iter(self._marks))]

    def __len__(self) -> int:
        return len(self._marks)


class RedisDedupStore:
    """A dedup store in Redis shared by every worker: ``SET key busy NX PX ttl``.

    Args:
        client: a `redis.Redis` client (a Sentinel-managed one too:
            ``Sentinel(...).master_for(name)``), or a URL to create one
            (``redis+sentinel://`` too).
        prefix: key prefix; a worker's marks are ``<prefix><queue>:<message id>`` (see
            `key`).
    """

    def __init__(self, client: Any, *, prefix: str = "sp:dedup:") -> None:
        if isinstance(client, str):
            client = client_from_url(client, parameter="client", feature="RedisDedupStore")
        if not prefix:
            raise ConfigurationError("prefix", prefix, "a non-empty key prefix")
        self._client = client
        self._prefix = prefix

    def claim(self, message_id: str, ttl: float) -> Claim:
        key = self._prefix + message_id
        try:
            if self._client.set(key, b"busy", nx=True, px=max(1, int(ttl * 1000))):
                return Claim.ACQUIRED
            value = self._client.get(key)
        except Exception as exc:
            raise BackendUnavailable("redis", f"dedup store: {exc}") from exc
        if value is None:  # expired between SET and GET: try once more
            return self.claim(message_id, ttl)
        return Claim.DONE if value in _DONE else Claim.BUSY

    def complete(self, message_id: str, ttl: float) -> None:
        try:
            self._client.set(self._prefix + message_id, b"done", px=max(1, int(ttl * 1000)))
        except Exception as exc:
            raise BackendUnavailable("redis", f"dedup store: {exc}") from exc

    def key(self, queue: str, message_id: str) -> str:
        """The Redis key of the mark the worker of `queue` keeps for `message_id`.

        To make an effect happen exactly once even if the worker dies right after it,
        write ``SET <key> done PX <dedup_ttl>`` in the same transaction as the effect.
        """
        return f"{self._prefix}{queue}:{message_id}"

    def release(self, message_id: str) -> None:
        key = self._prefix + message_id
        try:
            # Only an in-progress mark is dropped; a "done" one stays (WATCH makes the
            # check and the delete one step: a concurrent "done" aborts the delete).
            with self._client.pipeline() as pipe:
                pipe.watch(key)
                if pipe.get(key) in _BUSY:
                    pipe.multi()
                    pipe.delete(key)
                    pipe.execute()
                else:
                    pipe.unwatch()
        except Exception as exc:
            if type(exc).__name__ == "WatchError":
                return
            raise BackendUnavailable("redis", f"dedup store: {exc}") from exc

    def __repr__(self) -> str:
        return f"RedisDedupStore(prefix={self._prefix!r})"
