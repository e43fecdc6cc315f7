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

from scalepatterns._coroutines import has_async_commands
from scalepatterns._redis_url import client_from_url
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import BackendUnavailable, ConfigurationError

__all__ = ["AsyncDedupStore", "Claim", "DedupStore", "MemoryDedupStore", "RedisDedupStore"]


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


class AsyncDedupStore(Protocol):
    """`DedupStore` for an `AsyncWorker`: the same methods, awaitable, `a`-prefixed."""

    async def aclaim(self, message_id: str, ttl: float) -> Claim: ...

    async def acomplete(self, message_id: str, ttl: float) -> None: ...

    async def arelease(self, message_id: str) -> None: ...


# bytes, or str from a client created with decode_responses=True
_DONE = (b"done", "done")
_ACQUIRED = (b"acquired", "acquired")


class MemoryDedupStore:
    """An in-process dedup store (one worker process only); sync and async."""

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

    async def aclaim(self, message_id: str, ttl: float) -> Claim:
        return self.claim(message_id, ttl)

    async def acomplete(self, message_id: str, ttl: float) -> None:
        self.complete(message_id, ttl)

    async def arelease(self, message_id: str) -> None:
        self.release(message_id)

    def _evict(self, now: float) -> None:
        for key in [k for k, (_, expiry) in self._marks.items() if expiry <= now]:
            del self._marks[key]
        while len(self._marks) >= self._max:
            del self._marks[next(iter(self._marks))]

    def __len__(self) -> int:
        return len(self._marks)


# One round trip each, atomic: a claim that finds a mark reads it in the same step, and a
# release deletes only an in-progress mark (never a "done" one a later worker wrote).
_CLAIM = """
if redis.call('set', KEYS[1], 'busy', 'NX', 'PX', ARGV[1]) then return 'acquired' end
return redis.call('get', KEYS[1])
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == 'busy' then return redis.call('del', KEYS[1]) end
return 0
"""


def _claimed(reply: object) -> Claim:
    if reply in _ACQUIRED:
        return Claim.ACQUIRED
    return Claim.DONE if reply in _DONE else Claim.BUSY


def _ms(ttl: float) -> int:
    return max(1, int(ttl * 1000))


class RedisDedupStore:
    """A dedup store in Redis shared by every worker (one Lua script per claim/release).

    Args:
        client: a `redis.Redis` client (Cluster and Sentinel-managed ones too:
            ``Sentinel(...).master_for(name)``; each mark is one key), a URL to create
            one (``redis+sentinel://`` too), or a `redis.asyncio.Redis` client for an
            `AsyncWorker` (its methods are then `aclaim`, `acomplete`, `arelease`).
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
        self._async = has_async_commands(client)
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    @property
    def asynchronous(self) -> bool:
        """True for a `redis.asyncio` client: the store of an `AsyncWorker`."""
        return self._async

    def _sync_client(self, method: str) -> None:
        if self._async:
            raise TypeError(
                f"RedisDedupStore.{method} needs a sync redis client; with a redis.asyncio "
                f"client use a{method} (an AsyncWorker does)"
            )

    def _async_client(self, method: str) -> None:
        if not self._async:
            raise TypeError(
                f"RedisDedupStore.a{method} needs a redis.asyncio client; this one is sync "
                f"(use {method}, as a Worker does)"
            )

    def claim(self, message_id: str, ttl: float) -> Claim:
        self._sync_client("claim")
        try:
            return _claimed(self._claim(keys=[self._prefix + message_id], args=[_ms(ttl)]))
        except Exception as exc:
            raise BackendUnavailable("redis", f"dedup store: {exc}") from exc

    def complete(self, message_id: str, ttl: float) -> None:
        self._sync_client("complete")
        try:
            self._client.set(self._prefix + message_id, b"done", px=_ms(ttl))
        except Exception as exc:
            raise BackendUnavailable("redis", f"dedup store: {exc}") from exc

    def release(self, message_id: str) -> None:
        self._sync_client("release")
        try:
            self._release(keys=[self._prefix + message_id])
        except Exception as exc:
            raise BackendUnavailable("redis", f"dedup store: {exc}") from exc

    async def aclaim(self, message_id: str, ttl: float) -> Claim:
        self._async_client("claim")
        try:
            reply = await self._claim(keys=[self._prefix + message_id], args=[_ms(ttl)])
        except Exception as exc:
            raise BackendUnavailable("redis", f"dedup store: {exc}") from exc
        return _claimed(reply)

    async def acomplete(self, message_id: str, ttl: float) -> None:
        self._async_client("complete")
        try:
            await self._client.set(self._prefix + message_id, b"done", px=_ms(ttl))
        except Exception as exc:
            raise BackendUnavailable("redis", f"dedup store: {exc}") from exc

    async def arelease(self, message_id: str) -> None:
        self._async_client("release")
        try:
            await self._release(keys=[self._prefix + message_id])
        except Exception as exc:
            raise BackendUnavailable("redis", f"dedup store: {exc}") from exc

    def key(self, queue: str, message_id: str) -> str:
        """The Redis key of the mark the worker of `queue` keeps for `message_id`.

        To make an effect happen exactly once even if the worker dies right after it,
        write ``SET <key> done PX <dedup_ttl>`` in the same transaction as the effect.
        """
        return f"{self._prefix}{queue}:{message_id}"

    def __repr__(self) -> str:
        return f"RedisDedupStore(prefix={self._prefix!r})"
