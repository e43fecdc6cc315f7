"""`Namespace`: what the cached functions of one `Cache` share.

- the namespace version, read from the shared backend and trusted `version_ttl` seconds,
  that starts every shared key (``namespace[@version]:``); bumping it drops every entry;
- the outage guard in front of the shared backend, and the counting, logging and events
  of its failures;
- the memory tier's indexes (`LocalIndex`), the pub/sub `Subscriber` of a two-tier cache
  and what it publishes;
- the invalidations the shared backend has not taken yet (`Unsent`) and their sending;
- the `RefreshPool` of background refreshes.

The operations that touch the shared backend are flows (see `_steps`): `head`,
`bump` and `drop_tags` are run with plain calls on the sync backend or with awaits on the
asyncio one, so the two cannot drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from scalepatterns._redis_url import server_of
from scalepatterns._steps import Flow, adrive, drive
from scalepatterns.cache._local_index import LocalIndex
from scalepatterns.cache._refresh import RefreshPool
from scalepatterns.cache._subscriber import Subscriber
from scalepatterns.cache.events import CacheBackendError
from scalepatterns.cache.memory import MemoryBackend
from scalepatterns.cache.unsent import Batch, Unsent, send
from scalepatterns.clock import Clock
from scalepatterns.events import Listeners
from scalepatterns.outage import OutageGuard
from scalepatterns.serializers import Serializer
from scalepatterns.sharding.errors import ShardUnavailable

__all__ = ["Generation", "Namespace", "guarded"]

_log = logging.getLogger("scalepatterns.cache")

# Seconds between two tries of the background sender of unsent invalidations (each try
# goes through the outage guard, so a dead Redis is not touched more often than it allows).
RESEND_EVERY = 0.25

_FAILED: Any = object()


def backend_name(backend: Any) -> str:
    return str(getattr(backend, "name", "backend"))


def guarded(  # noqa: PLR0917 - internal, one flow for every guarded call
    guard: OutageGuard,
    failed: Callable[[str, Exception], None],
    operation: str,
    method: Callable[..., Any],
    args: tuple[Any, ...],
    default: Any,
    convert: Callable[[Any], Any] | None = None,
) -> Flow[Any]:
    """One backend call behind `guard`: `default` while the guard is open or when the
    call (or `convert` of its result) fails, which `failed` counts and reports."""
    if not guard.allow():
        return default
    try:
        result = yield method, args
        if convert is not None:
            result = convert(result)
    except Exception as exc:  # noqa: BLE001 - any backend failure means: go on without it
        failed(operation, exc)
        return default
    guard.record_success()
    return result


class Generation:
    """A cached function's token, first in each of its memory-tier keys. The namespace
    renews every token when its version moves on, so the entries of the old version
    become unreachable at once."""

    __slots__ = ("__weakref__", "token")

    def __init__(self) -> None:
        self.token = object()


class Namespace:
    """Versions, indexes, pub/sub, unsent invalidations and refreshes of one `Cache`."""

    def __init__(
        self,
        name: str,
        *,
        backend: Any,
        async_backend: Any,
        local: MemoryBackend | None,
        guard: OutageGuard,
        listeners: Listeners,
        clock: Clock,
        serializer: Serializer,
        plain_values: bool,
        local_ttl: float,
        version_ttl: float,
    ) -> None:
        self.name = name
        self.backend = backend
        self.async_backend = async_backend
        self.local = local
        self.guard = guard
        self.listeners = listeners
        self.clock = clock
        self.serializer = serializer
        self.plain_values = plain_values
        self.local_ttl = local_ttl
        self.version_ttl = version_ttl
        self.shared = backend is not None or async_backend is not None
        self.version_key = f"{name}:__version__"
        self.channel = f"{name}:__invalidate__"
        self.backend_errors = 0
        self.index = LocalIndex(local)
        self.unsent = Unsent()  # invalidations the shared backend has not seen yet
        self.refreshes = RefreshPool()
        self._version = 0
        self._head = f"{name}:"
        self._head_until = 0.0 if self.shared else math.inf
        self._generations: weakref.WeakSet[Generation] = weakref.WeakSet()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._publisher: Callable[[str], None] | None = None
        self._subscriber: Subscriber | None = None

    # -- versions --------------------------------------------------------------------------

    def generation(self) -> Generation:
        """A new cached function's token, renewed with every version."""
        generation = Generation()
        self._generations.add(generation)
        return generation

    def tag_key(self, tag: str) -> str:
        return f"{self.name}:__tag__:{tag}"

    def _set_version(self, version: int) -> None:
        if version != self._version:
            self._version = version
            self._head = f"{self.name}@{version}:" if version else f"{self.name}:"
            for generation in list(self._generations):
                generation.token = object()

    def head(self) -> str:
        """``namespace[@version]:``, the start of every shared key, on the sync backend.

        Invalidations the backend has not taken yet (it was unreachable) are sent first,
        so this process does not read an entry it invalidated.
        """
        if self.clock.monotonic() < self._head_until or self.backend is None:
            return self._head
        return drive(self._read_head(self.backend, self._send_unsent))

    async def ahead(self) -> str:
        """`head()` on the asyncio backend (on the sync one when there is none)."""
        if self.clock.monotonic() < self._head_until or self.async_backend is None:
            return self.head()
        return await adrive(self._read_head(self.async_backend, self._asend_unsent))

    def _read_head(self, backend: Any, send_unsent: Callable[[Any], Any]) -> Flow[str]:
        if self.unsent and not (yield send_unsent, (backend,)):
            return self._head  # the backend is still away: try again on the next call
        self._head_until = self.clock.monotonic() + self.version_ttl
        version = yield from self.guarded(
            "get", backend.get, (self.version_key,), None, lambda raw: int(raw or 0)
        )
        if version is not None:  # on failure, go on with the version we know
            self._set_version(version)
        return self._head

    # -- the shared backend's failures -----------------------------------------------------

    def guarded(
        self,
        operation: str,
        method: Callable[..., Any],
        args: tuple[Any, ...],
        default: Any,
        convert: Callable[[Any], Any] | None = None,
    ) -> Flow[Any]:
        """`guarded` for the namespace's own calls (versions, tags, publishing)."""
        return guarded(self.guard, self._failed, operation, method, args, default, convert)

    def _failed(self, operation: str, exc: Exception) -> None:
        shared = self.backend if self.backend is not None else self.async_backend
        name = "redis" if operation == "publish" else backend_name(shared)
        self.failed(operation, exc, name, "")

    def failed(self, operation: str, exc: BaseException, backend: str, function: str) -> None:
        """Count a backend failure, feed the guard, log when it opens, emit
        `CacheBackendError`."""
        self.backend_errors += 1
        # A decode error is the entry's fault, and a shard with its own guard
        # (`ShardUnavailable`) cools down alone: neither opens the cache-wide guard.
        feeds_guard = operation != "decode" and not isinstance(exc, ShardUnavailable)
        opened = self.guard.record_failure() if feeds_guard else False
        if opened:
            _log.warning(
                "cache %r: %s backend%s failing (%s); skipping it for %.1fs",
                self.name,
                backend,
                self._server(),
                type(exc).__name__,
                self.guard.cooldown,
            )
        if self.listeners.active:
            self.listeners.emit(
                CacheBackendError(
                    self.name,
                    function,
                    backend,
                    operation,
                    f"{type(exc).__name__}: {exc}",
                    opened or self.guard.is_open,
                )
            )

    def _server(self) -> str:
        """`` at host:port`` of the shared backend's Redis client, for log lines ("" for
        other backends)."""
        shared = self.backend if self.backend is not None else self.async_backend
        client = getattr(shared, "client", None)
        return "" if client is None else f" at {server_of(client)}"

    # -- invalidation ----------------------------------------------------------------------

    def bump(self, backend: Any) -> Flow[int]:
        """Move the version on (in `backend` when there is one): every entry is dropped.
        Returns the new version."""
        version = self._version + 1
        if backend is not None:
            bumped = yield from self.guarded("incr", backend.incr, (self.version_key,), None, int)
            if bumped is None:
                # The backend is unreachable: this process moves on now, and the bump goes
                # to the backend before it is read again (or its older version would bring
                # the invalidated entries back).
                self.defer(bump=True)
            else:
                version = bumped
        self._set_version(version)
        self._clear_local()
        self._publish("n")
        return version

    def drop_tags(self, backend: Any, tags: tuple[str, ...]) -> Flow[int]:
        """Drop every entry stored with any of `tags`; how many shared keys were deleted
        (memory-tier entries when there is no backend)."""
        names = [self.tag_key(t) for t in tags]
        local_count = self.index.pop_tags(names)
        if backend is None or not hasattr(backend, "pop_tagged"):
            return local_count
        batch = Batch(tags=set(names))
        if not self.guard.allow():
            sent = False
        else:
            try:
                yield from send(backend, batch, self.version_key)
            except Exception as exc:  # noqa: BLE001 - kept, sent when the backend answers
                self._failed("tag", exc)
                sent = False
            else:
                self.guard.record_success()
                sent = True
        if not sent:
            self.defer(keys=batch.keys, tags=batch.tags)
            return 0
        skeys = sorted(batch.keys)
        self.index.drop(skeys)
        self.publish_keys(skeys)
        return len(skeys)

    def _clear_local(self) -> None:
        if self.local is not None and self.shared:
            self.local.clear()
            self.index.forget_keys()

    # -- invalidations the shared backend has not taken yet --------------------------------

    def defer(
        self, *, keys: Iterable[str] = (), tags: Iterable[str] = (), bump: bool = False
    ) -> None:
        """Keep invalidations the shared backend did not take, to send when it answers."""
        self.unsent.add(keys=keys, tags=tags, bump=bump)
        self._head_until = 0.0  # the next key computed sends them first
        if self.backend is not None:
            with self._lock:
                if self.unsent.thread is None and not self._closing.is_set():
                    self.unsent.thread = threading.Thread(
                        target=self._resend,
                        name=f"scalepatterns-cache-unsent-{self.name}",
                        daemon=True,
                    )
                    self.unsent.thread.start()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop here: the next `ahead()` sends them
            return
        if self.unsent.task is None or self.unsent.task.done():
            self.unsent.task = loop.create_task(self._aresend())

    def _resend(self) -> None:
        while not self._closing.wait(RESEND_EVERY):
            with self._lock:
                if not self.unsent:
                    self.unsent.thread = None
                    return
            self._send_unsent(self.backend)

    async def _aresend(self) -> None:
        while self.unsent:
            await asyncio.sleep(RESEND_EVERY)
            await self._asend_unsent(self.async_backend)

    def _send_unsent(self, backend: Any) -> bool:
        """Send the unsent invalidations through a sync backend; True when none are left."""
        with self.unsent.send_lock:  # one sender; other callers wait, then read Redis
            return drive(self._sending(backend))

    async def _asend_unsent(self, backend: Any) -> bool:
        """`_send_unsent` through an asyncio backend: one task sends, the others wait."""
        sending = self.unsent.asending
        if sending is not None:
            await asyncio.shield(sending)
            return not self.unsent
        self.unsent.asending = finished = asyncio.get_running_loop().create_future()
        try:
            return await adrive(self._sending(backend))
        finally:
            self.unsent.asending = None
            finished.set_result(None)

    def _sending(self, backend: Any) -> Flow[bool]:
        batch = self.unsent.take()
        if not batch or not self.guard.allow():
            self.unsent.give_back(batch)
            return not self.unsent
        try:
            version = yield from send(backend, batch, self.version_key)
        except Exception as exc:  # noqa: BLE001 - kept for the next try
            self.unsent.give_back(batch)
            self.failed("invalidate", exc, backend_name(backend), "")
            return False
        except BaseException:  # interrupted: no verdict on the backend
            self.unsent.give_back(batch)
            self.guard.release_probe()
            raise
        self.unsent.done()
        self.guard.record_success()
        # Tell the memory tiers: this one, and the others through pub/sub.
        skeys = sorted(batch.keys)
        self.index.drop(skeys)
        self.publish_keys(skeys)
        if version is not None:
            self._set_version(version)
            self._clear_local()
            self._publish("n")
        return not self.unsent

    # -- two-tier invalidation messages ----------------------------------------------------

    def publish_keys(self, skeys: list[str]) -> None:
        if skeys:
            self._publish("k" + "\n".join(skeys))

    def _publish(self, message: str) -> None:
        publisher = self._publisher
        if publisher is not None:
            drive(self.guarded("publish", publisher, (message,), None))

    def listen(self, client: Any) -> None:
        """Publish invalidations on, and apply those heard from, the channel of `client`."""
        channel = self.channel
        self._publisher = lambda message: client.publish(channel, message.encode())
        self._subscriber = Subscriber(
            client,
            channel,
            f"scalepatterns-cache-{self.name}",
            self.on_message,
            self.resync,
        )
        self._subscriber.start()

    def on_message(self, message: str) -> None:
        """Apply an invalidation published by another process (or this one)."""
        if message.startswith("k"):
            self.index.drop(message[1:].split("\n"))
        elif message == "n":
            self._head_until = 0.0
            self.head()
            if self.local is not None:
                self.local.clear()
                self.index.forget_keys()

    def resync(self) -> None:
        """Forget the memory tier: called after pub/sub was cut, when messages may be lost."""
        self._head_until = 0.0
        self._clear_local()

    # -- stopping --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the background sender, the subscriber and the refreshes."""
        self._closing.set()
        sender = self.unsent.thread
        if sender is not None:
            sender.join(timeout=5)
        if self.unsent:
            _log.warning(
                "closing cache %r with %d invalidations Redis never took: its entries stay "
                "until their TTL",
                self.name,
                len(self.unsent),
            )
        if self._subscriber is not None:
            self._subscriber.stop()
            self._subscriber = None
        if not self.refreshes.wait(10.0):
            _log.warning("closing cache %r with background refreshes still running", self.name)

    async def astop_sender(self) -> None:
        """Cancel the asyncio background sender, if one runs."""
        task = self.unsent.task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.unsent.task = None
