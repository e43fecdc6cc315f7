"""`Cache` and its `cached` decorator: cache-aside on memory, Redis, or both.

```python
from scalepatterns.cache import Cache

cache = Cache.memory(maxsize=1_000, ttl=60)
calls = []

@cache.cached()
def square(n: int) -> int:
    calls.append(n)
    return n * n

assert square(4) == square(4) == 16
assert calls == [4]
square.invalidate(4)
assert square(4) == 16 and calls == [4, 4]
```
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import random
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterable
from typing import Any, Protocol, TypeVar, overload

from typing_extensions import ParamSpec

from scalepatterns._checks import seconds
from scalepatterns._coroutines import has_async_commands, is_coroutine_callable
from scalepatterns._redis_url import aclose_client, close_client, server_of
from scalepatterns.cache._core import CacheInfo, Core, Options
from scalepatterns.cache._drivers import AsyncDriver, SyncDriver
from scalepatterns.cache.events import CacheBackendError
from scalepatterns.cache.keys import KeyBuilder
from scalepatterns.cache.memory import MemoryBackend
from scalepatterns.cache.policy import HEADER, MAGIC
from scalepatterns.cache.unsent import Batch, Unsent, asend, send
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError, SerializationError
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.outage import OutageGuard
from scalepatterns.serializers import JsonSerializer, Serializer
from scalepatterns.sharding.errors import ShardUnavailable

__all__ = ["AsyncCachedFunction", "Cache", "CachedFunction"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
_log = logging.getLogger("scalepatterns.cache")

# Seconds between two tries of the background sender of unsent invalidations (each try
# goes through the outage guard, so a dead Redis is not touched more often than it allows).
RESEND_EVERY = 0.25


def _name(backend: Any) -> str:
    return str(getattr(backend, "name", "backend"))


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()


class CachedFunction(Protocol[P, R]):
    """What `@cache.cached(...)` returns for a `def` function."""

    __wrapped__: Callable[P, R]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Drop the entry of this call (from every tier; other processes' memory tiers too)."""

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function now, store its result and return it."""

    def get_many(self, items: Iterable[Any]) -> list[R]:
        """Results for many calls: one batch read for the hits, loads for the misses only.

        Each item is the argument of a one-parameter function, else a tuple of
        positional arguments.
        """

    def cache_info(self) -> CacheInfo:
        """Hits, misses, stale serves, loads, errors, size, like `functools.lru_cache`."""


class AsyncCachedFunction(Protocol[P, R]):
    """What `@cache.cached(...)` returns for an `async def` function."""

    __wrapped__: Callable[P, Coroutine[Any, Any, R]]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]: ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, None]:
        """Drop the entry of this call."""

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Call the function now, store its result and return it."""

    def get_many(self, items: Iterable[Any]) -> Coroutine[Any, Any, list[R]]:
        """Results for many calls: one batch read for the hits, loads for the misses only."""

    def cache_info(self) -> CacheInfo:
        """Hits, misses, stale serves, loads, errors, size."""


class _Decorator(Protocol):
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> AsyncCachedFunction[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> CachedFunction[P, R]: ...


class Cache:
    """A cache-aside store for functions: memory, a shared backend, or both (two-tier).

    Args:
        backend: `MemoryBackend` (the default), a `CacheBackend` (e.g. `RedisBackend`, a
            `ShardedBackend`, your own) or an `AsyncCacheBackend`.
        namespace: prefix of every key; `invalidate_namespace()` drops all of it at once.
        ttl: default seconds an entry stays fresh; `None` for no expiry.
        jitter: entries live `ttl * (1 - jitter * U(0, 1))`, so a batch written together
            does not expire together (never longer than `ttl`).
        serializer: how values are stored in shared backends (JSON by default).
        local: a `MemoryBackend` in front of a shared backend (two-tier).
        local_ttl: longest seconds a value stays in the local tier of a two-tier cache.
        plain_values: store only the serialized value (no envelope), so services in other
            languages read and write the same entries; stale serving and early refresh
            need the envelope and are refused.
        async_backend: the asyncio twin of `backend`, used by `async def` functions.
        guard: the breaker that skips a failing shared backend for a cool-down.
        version_ttl: seconds the namespace version read from the backend is trusted.
        lock_ttl, lock_wait: the cross-process load lock's expiry, and how long other
            processes wait for the lock holder's value before loading themselves.
        listeners: where events go (default: the process-wide registry).
        clock: time source (`FakeClock` in tests).
    """

    def __init__(
        self,
        backend: Any = None,
        *,
        namespace: str = "cache",
        ttl: float | None = 300.0,
        jitter: float = 0.1,
        serializer: Serializer | None = None,
        local: MemoryBackend | None = None,
        local_ttl: float = 5.0,
        plain_values: bool = False,
        async_backend: Any = None,
        guard: OutageGuard | None = None,
        version_ttl: float = 1.0,
        lock_ttl: float = 30.0,
        lock_wait: float = 10.0,
        listeners: Listeners | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not isinstance(namespace, str) or not namespace or ":" in namespace:
            raise ConfigurationError("namespace", namespace, "a non-empty string without ':'")
        seconds("ttl", ttl, allow_none=True)
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter < 1:
            raise ConfigurationError("jitter", jitter, "a fraction in [0, 1)")
        for name, value in (
            ("local_ttl", local_ttl),
            ("version_ttl", version_ttl),
            ("lock_wait", lock_wait),
        ):
            seconds(name, value)
        seconds("lock_ttl", lock_ttl, positive=True)
        self.namespace = namespace
        self.ttl = ttl
        self.jitter = float(jitter)
        self.serializer: Serializer = serializer if serializer is not None else JsonSerializer()
        self.plain_values = plain_values
        self.listeners = listeners if listeners is not None else default_listeners
        self.clock = clock
        self.guard = guard if guard is not None else OutageGuard(3, 5.0, clock=clock)
        self.version_ttl = version_ttl
        self.lock_ttl = float(lock_ttl)
        self.lock_wait = float(lock_wait)
        self.local_ttl = float(local_ttl)
        self.random: Callable[[], float] = random.random
        self.backend_errors = 0
        if backend is None or isinstance(backend, MemoryBackend):
            if local is not None:
                raise ConfigurationError(
                    "local", local, "None when the backend is already in memory"
                )
            self.local: MemoryBackend | None = (
                backend if backend is not None else MemoryBackend(clock=clock)
            )
            self.backend: Any = None
            self.async_backend: Any = None
        else:
            self.local = local
            if is_coroutine_callable(getattr(backend, "get", None)):
                self.backend, self.async_backend = None, backend
            else:
                self.backend, self.async_backend = backend, async_backend
            for candidate in (self.backend, self.async_backend):
                if candidate is not None and not all(
                    callable(getattr(candidate, m, None))
                    for m in ("get", "get_many", "set", "delete", "incr")
                ):
                    raise TypeError(
                        "backend must implement get/get_many/set/delete/incr "
                        "(see scalepatterns.cache.CacheBackend)"
                    )
        self._version = 0
        self.unsent = Unsent()  # invalidations Redis has not seen yet
        self._closing = threading.Event()
        self._head = f"{namespace}:"
        self._head_until = 0.0 if self.shared else float("inf")
        self._cores: weakref.WeakSet[Core] = weakref.WeakSet()
        self._tag_index: dict[str, set[Hashable]] = {}
        self._tagged = 0  # (tag, entry) pairs in the index, pruned or not
        self._reverse: dict[str, Hashable] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._lock = threading.Lock()
        self._publisher: Callable[[str], None] | None = None
        self._subscriber: _Subscriber | None = None
        self._owns_clients = False

    # -- constructors ----------------------------------------------------------------------

    @classmethod
    def memory(cls, maxsize: int = 10_000, ttl: float | None = 300.0, **options: Any) -> Cache:
        """An in-process cache: a dict with per-entry expiry, bounded to `maxsize` entries."""
        clock = options.get("clock", SYSTEM_CLOCK)
        return cls(MemoryBackend(maxsize, clock=clock), ttl=ttl, **options)

    @classmethod
    def redis(
        cls,
        client_or_url: Any,
        *,
        socket_timeout: float = 0.5,
        local_ttl: float | None = None,
        maxsize: int = 10_000,
        **options: Any,
    ) -> Cache:
        """A cache on Redis: a URL (``redis://``, ``rediss://``, ``unix://`` or
        ``redis+sentinel://host[:port][,...]/service[/db]``), a redis-py client (`Redis`,
        `RedisCluster`, ``Sentinel(...).master_for(name)``) or a `redis.asyncio` client.
        With `local_ttl`, a memory tier sits in front (two-tier).

        From a URL both a sync and an asyncio client are made (short timeouts, no driver
        retries: the outage guard decides), so `def` and `async def` functions both work.
        """
        from scalepatterns.cache import redis_backend as rb

        if isinstance(client_or_url, str):
            options.setdefault(
                "async_backend",
                rb.AsyncRedisBackend(
                    rb.connect_async(client_or_url, socket_timeout=socket_timeout)
                ),
            )
            backend: Any = rb.RedisBackend(rb.connect(client_or_url, socket_timeout=socket_timeout))
        elif has_async_commands(client_or_url) or is_coroutine_callable(
            getattr(client_or_url, "get", None)
        ):
            backend = rb.AsyncRedisBackend(client_or_url)
        else:
            backend = rb.RedisBackend(client_or_url)
        if local_ttl is not None:
            clock = options.get("clock", SYSTEM_CLOCK)
            options["local"] = MemoryBackend(maxsize, clock=clock)
            options["local_ttl"] = local_ttl
        cache = cls(backend, **options)
        cache._owns_clients = isinstance(client_or_url, str)
        if local_ttl is not None and isinstance(backend, rb.RedisBackend):
            cache.listen_for_invalidations(backend.client)
        return cache

    @classmethod
    def two_tier(
        cls, client_or_url: Any, *, local_ttl: float = 5.0, maxsize: int = 10_000, **options: Any
    ) -> Cache:
        """Memory in front of Redis: hits cost a dict read; invalidations reach every
        process's memory tier through Redis pub/sub."""
        return cls.redis(client_or_url, local_ttl=local_ttl, maxsize=maxsize, **options)

    @property
    def shared(self) -> bool:
        """True when entries live in a shared backend (Redis, sharded, your own)."""
        return self.backend is not None or self.async_backend is not None

    # -- the decorator ---------------------------------------------------------------------

    @overload
    def cached(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncCachedFunction[P, R]: ...

    @overload
    def cached(self, fn: Callable[P, R], /) -> CachedFunction[P, R]: ...

    @overload
    def cached(
        self,
        fn: None = None,
        /,
        *,
        ttl: float | None = ...,
        key: str | None = ...,
        version: int | str = ...,
        name: str | None = ...,
        unless: Callable[[Any], bool] | None = ...,
        cache_none: bool = ...,
        negative_ttl: float | None = ...,
        stale_ttl: float = ...,
        stale_if_error: float = ...,
        early_refresh: float = ...,
        tags: Callable[..., Iterable[str]] | None = ...,
        include_self: bool = ...,
        sensitive: bool = ...,
        lock: bool = ...,
    ) -> _Decorator: ...

    def cached(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        ttl: float | None = DEFAULT,
        key: str | None = None,
        version: int | str = 0,
        name: str | None = None,
        unless: Callable[[Any], bool] | None = None,
        cache_none: bool = True,
        negative_ttl: float | None = None,
        stale_ttl: float = 0.0,
        stale_if_error: float = 0.0,
        early_refresh: float = 0.0,
        tags: Callable[..., Iterable[str]] | None = None,
        include_self: bool = False,
        sensitive: bool = False,
        lock: bool = True,
    ) -> Any:
        """Cache a function's results (a `def` or `async def` function or method).

        Args:
            ttl: seconds fresh (default: the cache's); `None` never expires.
            key: a readable key template over parameter names, e.g. ``"user:{user_id}"``.
            version: part of the key; bump it when the result's shape changes.
            name: the function's name in keys (default: its qualified name).
            unless: a predicate over the result; true means "do not cache this one".
            cache_none: cache `None` results ("not found") at all.
            negative_ttl: seconds a `None` result stays fresh (default: `ttl`).
            stale_ttl: serve a value this long past expiry while one caller refreshes it.
            stale_if_error: serve a value this long past expiry when the function raises.
            early_refresh: XFetch's beta (1.0 is a good start; 0 turns it off): hot keys
                are refreshed, in the background, shortly before they expire.
            tags: a function of the call's arguments returning tags for its entry, dropped
                together by `Cache.invalidate_tags`.
            include_self: keep `self`/`cls` in the key of a method.
            sensitive: refuse shared backends for this function (memory only).
            lock: on a shared backend, one process loads a missing key while the others
                wait for its value.

        Raises:
            ConfigurationError: an option has a value it cannot take.
        """
        settled = Options(
            ttl=self.ttl if ttl is DEFAULT else ttl,
            jitter=self.jitter,
            negative_ttl=negative_ttl,
            cache_none=cache_none,
            stale_ttl=stale_ttl,
            stale_if_error=stale_if_error,
            early_refresh=early_refresh,
            unless=unless,
            tags=tags,
            lock=lock,
            lock_ttl=self.lock_ttl,
            lock_wait=self.lock_wait,
        )
        self._check(settled, sensitive)

        def decorate(func: Callable[..., Any]) -> Any:
            return self._wrap(func, settled, key, version, name, include_self)

        return decorate if fn is None else decorate(fn)

    def _check(self, options: Options, sensitive: bool) -> None:
        seconds("ttl", options.ttl, allow_none=True)
        seconds("negative_ttl", options.negative_ttl, allow_none=True)
        for name in ("stale_ttl", "stale_if_error", "early_refresh"):
            seconds(name, getattr(options, name))
        if sensitive and self.shared:
            raise ConfigurationError(
                "sensitive",
                sensitive,
                "a memory-only Cache: sensitive results never go to a shared backend",
            )
        if self.plain_values and not options.plain:
            raise ConfigurationError(
                "plain_values",
                True,
                "no stale_ttl / stale_if_error / early_refresh (they need the envelope)",
            )
        if options.unless is not None and not callable(options.unless):
            raise TypeError("unless must be a callable taking the result and returning a bool")
        if options.tags is not None and not callable(options.tags):
            raise TypeError("tags must be a callable taking the call's arguments")

    def _wrap(  # noqa: PLR0917 - internal
        self,
        fn: Callable[..., Any],
        options: Options,
        template: str | None,
        version: int | str,
        name: str | None,
        include_self: bool,
    ) -> Any:
        if not callable(fn):
            raise TypeError(f"cached() decorates a callable, not {type(fn).__name__}")
        named = fn
        while isinstance(named, functools.partial):
            named = named.func
        qualname = name or (
            f"{getattr(named, '__module__', None) or type(named).__module__}."
            f"{getattr(named, '__qualname__', None) or type(named).__qualname__}"
        )
        keys = KeyBuilder(
            fn, qualname=qualname, version=version, template=template, include_self=include_self
        )
        core = Core(self, fn, keys, options)
        self._cores.add(core)
        if is_coroutine_callable(fn):
            if self.async_backend is not None:
                adriver = AsyncDriver(core, self.async_backend, is_async=True)
            else:
                adriver = AsyncDriver(core, self.backend, is_async=False)
            wrapper = _async_wrapper(core, adriver, options)
            wrapper.invalidate = lambda *a, **k: adriver.invalidate(a, k)  # type: ignore[attr-defined]
            wrapper.refresh = lambda *a, **k: adriver.refresh(a, k)  # type: ignore[attr-defined]
            wrapper.get_many = adriver.get_many  # type: ignore[attr-defined]
        else:
            if self.backend is None and self.async_backend is not None:
                raise ConfigurationError(
                    "backend",
                    self.async_backend,
                    "a sync backend for a def function (this cache has only an asyncio one)",
                )
            driver = SyncDriver(core, self.backend)
            wrapper = _sync_wrapper(core, driver, options)
            wrapper.invalidate = lambda *a, **k: driver.invalidate(a, k)  # type: ignore[attr-defined]
            wrapper.refresh = lambda *a, **k: driver.refresh(a, k)  # type: ignore[attr-defined]
            wrapper.get_many = driver.get_many  # type: ignore[attr-defined]
        wrapper.cache_info = core.info  # type: ignore[attr-defined]
        wrapper.cache = self  # type: ignore[attr-defined]
        with contextlib.suppress(AttributeError, TypeError):
            functools.update_wrapper(wrapper, fn)
        # Keep the core alive as long as the wrapper is.
        wrapper._core = core  # type: ignore[attr-defined]
        return wrapper

    # -- keys and versions -----------------------------------------------------------------

    @property
    def version_key(self) -> str:
        return f"{self.namespace}:__version__"

    def tag_key(self, tag: str) -> str:
        return f"{self.namespace}:__tag__:{tag}"

    def _set_version(self, version: int) -> None:
        if version != self._version:
            self._version = version
            self._head = f"{self.namespace}@{version}:" if version else f"{self.namespace}:"
            for core in list(self._cores):
                core.token = object()  # every local entry of the old version is now unreachable

    def head(self) -> str:
        """``namespace[@version]:``, the start of every shared key.

        Invalidations Redis has not taken yet (it was unreachable) are sent first, so
        this process does not read an entry it invalidated.
        """
        if self.clock.monotonic() >= self._head_until and self.backend is not None:
            backend = self.backend
            if self.unsent and not self._send_unsent(backend):
                return self._head  # Redis still away: try again on the next call
            self._head_until = self.clock.monotonic() + self.version_ttl
            version = self.call_backend(
                "get", _name(backend), lambda: int(backend.get(self.version_key) or 0), None
            )
            if version is not None:  # on failure, go on with the version we know
                self._set_version(version)
        return self._head

    async def ahead(self) -> str:
        """`head()` for asyncio callers."""
        if self.clock.monotonic() >= self._head_until and self.async_backend is not None:
            backend = self.async_backend
            if self.unsent and not await self._asend_unsent(backend):
                return self._head
            self._head_until = self.clock.monotonic() + self.version_ttl

            async def read_version() -> int:
                return int(await backend.get(self.version_key) or 0)

            version = await self.acall_backend("get", _name(backend), read_version, None)
            if version is not None:
                self._set_version(version)
            return self._head
        return self.head()

    async def ashared_key(self, core: Core, values: tuple[Any, ...]) -> str:
        return core.keys.shared(values, await self.ahead())

    def call_backend(self, operation: str, backend: str, call: Callable[[], T], default: T) -> T:
        """`call()` behind the outage guard; `default` while the guard is open or when the
        call fails (counted and emitted by `backend_failed`)."""
        if not self.guard.allow():
            return default
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001 - any backend failure means: go on without it
            self.backend_failed(operation, exc, backend, "")
            return default
        self.guard.record_success()
        return result

    async def acall_backend(
        self, operation: str, backend: str, call: Callable[[], Awaitable[T]], default: T
    ) -> T:
        """`call_backend` for an asyncio backend."""
        if not self.guard.allow():
            return default
        try:
            result = await call()
        except Exception as exc:  # noqa: BLE001
            self.backend_failed(operation, exc, backend, "")
            return default
        self.guard.record_success()
        return result

    def backend_failed(
        self, operation: str, exc: BaseException, backend: str, function: str
    ) -> None:
        """Count a backend failure, feed the breaker, emit `CacheBackendError`."""
        self.backend_errors += 1
        # A decode error is the entry's fault, and a shard with its own guard
        # (`ShardUnavailable`) cools down alone: neither opens the cache-wide guard.
        feeds_guard = operation != "decode" and not isinstance(exc, ShardUnavailable)
        opened = self.guard.record_failure() if feeds_guard else False
        if opened:
            _log.warning(
                "cache %r: %s backend%s failing (%s); skipping it for %.1fs",
                self.namespace,
                backend,
                self._server(),
                type(exc).__name__,
                self.guard.cooldown,
            )
        if self.listeners.active:
            self.listeners.emit(
                CacheBackendError(
                    self.namespace,
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

    # -- local tier bookkeeping ------------------------------------------------------------

    def remember(self, skey: str, lkey: Hashable) -> None:
        """Map a shared key to its local-tier key, for invalidations from other processes."""
        reverse = self._reverse
        reverse[skey] = lkey
        local = self.local
        if local is not None and len(reverse) > 2 * local.maxsize:
            with self._lock:
                data = local._data
                self._reverse = {s: k for s, k in list(reverse.items()) if k in data}

    def tag_local(self, lkey: Hashable, tags: list[str]) -> None:
        with self._lock:
            index = self._tag_index
            for tag in tags:
                index.setdefault(tag, set()).add(lkey)
            self._tagged += len(tags)
            local = self.local
            if local is not None and self._tagged > 2 * local.maxsize:
                # Entries the memory tier evicted or expired leave their tags behind:
                # prune them, amortised over as many taggings as the tier holds entries.
                data = local._data
                pruned = {tag: {k for k in keys if k in data} for tag, keys in index.items()}
                self._tag_index = {tag: keys for tag, keys in pruned.items() if keys}
                self._tagged = sum(map(len, self._tag_index.values()))

    def _drop_local(self, skeys: Iterable[str]) -> None:
        local = self.local
        if local is None:
            return
        for skey in skeys:
            lkey = self._reverse.pop(skey, None)
            if lkey is not None:
                local.pop(lkey)

    # -- invalidation ----------------------------------------------------------------------

    def invalidate_namespace(self) -> int:
        """Drop every entry of this namespace, in O(1): the namespace version moves on.

        Other processes see the new version within `version_ttl` seconds (at once in a
        two-tier cache). Returns the new version.
        """
        version = self._version + 1
        backend = self.backend
        if backend is not None:
            bumped = self.call_backend(
                "incr", _name(backend), lambda: int(backend.incr(self.version_key)), None
            )
            if bumped is None:
                # Redis unreachable: this process moves on now, and the bump goes to Redis
                # before it is read again (or its older version would bring the
                # invalidated entries back).
                self.defer(bump=True)
            version = version if bumped is None else bumped
        self._set_version(version)
        if self.local is not None and self.shared:
            self.local.clear()
            self._reverse.clear()
        self._publish("n")
        return version

    async def ainvalidate_namespace(self) -> int:
        """`invalidate_namespace()` for a cache with an asyncio backend."""
        if self.async_backend is None or self.backend is not None:
            return self.invalidate_namespace()
        backend = self.async_backend
        bumped = await self.acall_backend(
            "incr", _name(backend), lambda: backend.incr(self.version_key), None
        )
        if bumped is None:  # as in `invalidate_namespace`
            self.defer(bump=True)
        version = self._version + 1 if bumped is None else int(bumped)
        self._set_version(version)
        if self.local is not None:
            self.local.clear()
        return version

    def _pop_local_tags(self, tags: tuple[str, ...]) -> tuple[list[str], int]:
        names = [self.tag_key(t) for t in tags]
        with self._lock:
            lkeys = set().union(*(self._tag_index.pop(n, set()) for n in names))
        if self.local is not None:
            for lkey in lkeys:
                self.local.pop(lkey)
        return names, len(lkeys)

    def invalidate_tags(self, *tags: str) -> int:
        """Drop every entry stored with any of `tags`.

        Returns how many shared keys were deleted (local entries when there is no
        shared backend).
        """
        names, local_count = self._pop_local_tags(tags)
        backend = self.backend
        if backend is None or not hasattr(backend, "pop_tagged"):
            return local_count
        batch = Batch(tags=set(names))

        def pop_and_delete() -> bool:
            send(backend, batch, self.version_key)
            return True

        if not self.call_backend("tag", _name(backend), pop_and_delete, False):
            self.defer(keys=batch.keys, tags=batch.tags)  # sent when Redis answers
            return 0
        skeys = sorted(batch.keys)
        self._drop_local(skeys)
        self.publish_keys(skeys)
        return len(skeys)

    async def ainvalidate_tags(self, *tags: str) -> int:
        """`invalidate_tags()` for a cache with an asyncio backend."""
        backend = self.async_backend
        if backend is None or self.backend is not None:
            return self.invalidate_tags(*tags)
        names, local_count = self._pop_local_tags(tags)
        if not hasattr(backend, "pop_tagged"):
            return local_count
        batch = Batch(tags=set(names))

        async def pop_and_delete() -> bool:
            await asend(backend, batch, self.version_key)
            return True

        if not await self.acall_backend("tag", _name(backend), pop_and_delete, False):
            self.defer(keys=batch.keys, tags=batch.tags)
            return 0
        skeys = sorted(batch.keys)
        self._drop_local(skeys)
        return len(skeys)

    # -- invalidations Redis has not taken yet ----------------------------------------------

    @property
    def unsent_invalidations(self) -> int:
        """Invalidations waiting for the shared backend to answer (0 when all were sent).

        Shared keys to delete and tags to pop, made while it was unreachable; they are sent
        before this cache reads it again, and by a background sender as soon as it answers.
        """
        return len(self.unsent)

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
                        name=f"scalepatterns-cache-unsent-{self.namespace}",
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
            batch = self._take_unsent()
            if batch is None:
                return not self.unsent
            try:
                version = send(backend, batch, self.version_key)
            except Exception as exc:  # noqa: BLE001 - kept for the next try
                self._not_sent(batch, exc, backend)
                return False
            except BaseException:
                self._not_sent(batch, None, backend)
                raise
            return self._was_sent(batch, version)

    async def _asend_unsent(self, backend: Any) -> bool:
        """`_send_unsent` through an asyncio backend."""
        sending = self.unsent.asending
        if sending is not None:  # another task is sending: wait for it, then read Redis
            await asyncio.shield(sending)
            return not self.unsent
        batch = self._take_unsent()
        if batch is None:
            return not self.unsent
        self.unsent.asending = finished = asyncio.get_running_loop().create_future()
        try:
            version = await asend(backend, batch, self.version_key)
        except Exception as exc:  # noqa: BLE001 - kept for the next try
            self._not_sent(batch, exc, backend)
            return False
        except BaseException:
            self._not_sent(batch, None, backend)
            raise
        finally:
            self.unsent.asending = None
            finished.set_result(None)
        return self._was_sent(batch, version)

    # What the two senders share: taking a batch past the guard, and the verdict.

    def _take_unsent(self) -> Batch | None:
        """The invalidations to send now; None if none wait or the guard says not now."""
        batch = self.unsent.take()
        if batch and self.guard.allow():
            return batch
        self.unsent.give_back(batch)
        return None

    def _not_sent(self, batch: Batch, exc: Exception | None, backend: Any) -> None:
        """Keep `batch` for the next try; `exc` None: interrupted, no verdict on Redis."""
        self.unsent.give_back(batch)
        if exc is None:
            self.guard.release_probe()
        else:
            self.backend_failed("invalidate", exc, _name(backend), "")

    def _was_sent(self, batch: Batch, version: int | None) -> bool:
        self.unsent.done()
        self.guard.record_success()
        self._sent(batch, version)
        return not self.unsent

    def _sent(self, batch: Batch, version: int | None) -> None:
        """Tell the memory tiers (this one and, through pub/sub, the others)."""
        skeys = sorted(batch.keys)
        self._drop_local(skeys)
        self.publish_keys(skeys)
        if version is not None:
            self._set_version(version)
            if self.local is not None:
                self.local.clear()
                self._reverse.clear()
            self._publish("n")

    # -- two-tier invalidation messages ----------------------------------------------------

    @property
    def channel(self) -> str:
        return f"{self.namespace}:__invalidate__"

    def publish_keys(self, skeys: list[str]) -> None:
        if skeys:
            self._publish("k" + "\n".join(skeys))

    def _publish(self, message: str) -> None:
        publisher = self._publisher
        if publisher is not None:
            self.call_backend("publish", "redis", lambda: publisher(message), None)

    def listen_for_invalidations(self, client: Any) -> None:
        """Subscribe to this namespace's invalidation channel (two-tier caches)."""
        channel = self.channel
        self._publisher = lambda message: client.publish(channel, message.encode())
        self._subscriber = _Subscriber(self, client)
        self._subscriber.start()

    def on_message(self, message: str) -> None:
        """Apply an invalidation published by another process (or this one)."""
        if message.startswith("k"):
            self._drop_local(message[1:].split("\n"))
        elif message == "n":
            self._head_until = 0.0
            self.head()
            if self.local is not None:
                self.local.clear()
                self._reverse.clear()

    def resync(self) -> None:
        """Forget the local tier: called after pub/sub was cut, when messages may be lost."""
        self._head_until = 0.0
        if self.local is not None and self.shared:
            self.local.clear()
            self._reverse.clear()

    # -- background work -------------------------------------------------------------------

    def submit(self, work: Callable[[], None]) -> None:
        """Run a background refresh on the cache's small thread pool."""
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix="scalepatterns-cache-refresh"
                )
            future = self._executor.submit(work)
            self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def wait_background(self, timeout: float | None = 10.0) -> bool:
        """Wait up to `timeout` seconds (None: no limit) for the background refreshes
        submitted so far; True when all of them finished.

        A refresh still running at the deadline (a hung loader) finishes on its own thread;
        the cache starts a fresh pool for later refreshes.
        """
        with self._lock:
            executor, self._executor = self._executor, None
            pending, self._pending = self._pending, set()
        if executor is None:
            return True
        _, not_done = concurrent.futures.wait(pending, timeout=timeout)
        executor.shutdown(wait=False)
        return not not_done

    def close(self) -> None:
        """Stop the pub/sub listener and background refreshes; close the sync client
        `Cache.redis(url)` made (use `aclose()` to close its asyncio client too)."""
        self._closing.set()
        sender = self.unsent.thread
        if sender is not None:
            sender.join(timeout=5)
        if self.unsent:
            _log.warning(
                "closing %r with %d invalidations Redis never took: its entries stay "
                "until their TTL",
                self,
                len(self.unsent),
            )
        if self._subscriber is not None:
            self._subscriber.stop()
            self._subscriber = None
        if not self.wait_background():
            _log.warning("closing %r with background refreshes still running", self)
        if self._owns_clients and self.backend is not None:
            with contextlib.suppress(Exception):
                close_client(self.backend.client)

    async def aclose(self) -> None:
        """`close()`, and close the asyncio client `Cache.redis(url)` made."""
        task = self.unsent.task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.unsent.task = None
        self.close()
        if self._owns_clients and self.async_backend is not None:
            with contextlib.suppress(Exception):
                await aclose_client(self.async_backend.client)

    def __repr__(self) -> str:
        kind = (
            "two-tier"
            if self.local is not None and self.shared
            else ("shared" if self.shared else "memory")
        )
        backend = self.backend if self.backend is not None else self.async_backend
        return f"Cache({kind}, namespace={self.namespace!r}, backend={backend or self.local!r})"


class _Subscriber:
    """A daemon thread that applies invalidation messages to the local tier."""

    def __init__(self, cache: Cache, client: Any) -> None:
        self.cache = weakref.ref(cache)
        self.client = client
        self.channel = cache.channel
        self._stop = threading.Event()
        self._reconnected = False
        self._thread = threading.Thread(
            target=self._run, name=f"scalepatterns-cache-{cache.namespace}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _on_connect(self, connection: Any) -> None:
        self._reconnected = True

    def _run(self) -> None:
        pubsub = None
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self.channel)
                    # A client with driver retries reconnects and subscribes again inside
                    # redis-py (after a failover, to the new master), unseen here.
                    register = getattr(pubsub.connection, "register_connect_callback", None)
                    if register is not None:
                        register(self._on_connect)
                    self._reconnected = True
                if self._reconnected:
                    self._reconnected = False
                    cache = self.cache()
                    if cache is None:
                        return
                    cache.resync()  # messages sent while we were away are lost
                    del cache
                message = pubsub.get_message(timeout=0.2)
                if message is not None and message.get("type") == "message":
                    cache = self.cache()
                    if cache is None:
                        return
                    cache.on_message(message["data"].decode())
                    del cache
            except Exception:  # noqa: BLE001, PERF203 - reconnect after a pause
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
                pubsub = None
                self._stop.wait(0.5)
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()


def _sync_wrapper(core: Core, driver: SyncDriver, options: Options) -> Callable[..., Any]:
    call = driver.call
    fast_key = core.fast_key
    local = core.local
    if local is None and driver.backend is not None and core.keys.arity >= 0:
        return _sync_shared_wrapper(core, driver, options)
    if fast_key is None or local is None or options.early_refresh:

        def generic(*args: Any, **kwargs: Any) -> Any:
            return call(args, kwargs)

        return generic

    # The hot path, chosen once: a positional call binds without inspect, its key is a
    # tuple, and a fresh entry is one lock-free dict read and one clock read away.
    arity = core.keys.arity
    data_get = local._data.get
    monotonic = core.monotonic
    stats = core.stats
    listeners = core.listeners

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not kwargs and len(args) == arity:
            try:
                entry = data_get(fast_key(core.token, args))
            except TypeError:  # an unhashable argument: the general path handles it
                entry = None
            if entry is not None and entry[1] > monotonic():
                stats.hits += 1
                if listeners.active:
                    core.hit_event()
                return entry[0]
        return call(args, kwargs)

    return wrapper


def _sync_shared_wrapper(core: Core, driver: SyncDriver, options: Options) -> Callable[..., Any]:
    # The shared-backend hit path, chosen once: one GET, the envelope's expiry checked
    # inline; anything unusual (a miss, stale, early refresh, an outage) goes on through
    # the driver with the bytes already read, so no call pays a second round trip.
    call, after_get, skipped = driver.call, driver.after_get, driver.call_skipped
    keys, cache, guard, stats, listeners = (
        core.keys,
        core.cache,
        driver.guard,
        core.stats,
        core.listeners,
    )
    get = driver.backend.get
    arity, skip = keys.arity, keys.skip_first
    shared, head, wall = keys.shared, cache.head, core.wall
    loads = core.serializer.loads
    plain = options.plain and not cache.plain_values
    magic, header, start = MAGIC, HEADER, len(MAGIC)
    offset = start + HEADER.size

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs or len(args) != arity:
            return call(args, kwargs)
        if guard.is_open:
            return skipped(args) if guard.retry_after() > 0.0 else call(args, kwargs)
        skey = shared(args[1:] if skip else args, head())
        try:
            data = get(skey)
        except Exception as exc:  # noqa: BLE001 - a failing backend: fail open
            driver.core.backend_failed("get", exc, driver.name)
            data = None
        else:
            guard.record_success()
            if plain and data is not None and data[:start] == magic and len(data) >= offset:
                fresh_until = header.unpack_from(data, start)[0]
                if fresh_until > wall():
                    try:
                        value = loads(data[offset:])
                    except SerializationError:
                        pass
                    else:
                        stats.hits += 1
                        if listeners.active:
                            core.hit_event()
                        return value
        return after_get(skey, data, None, None, args, kwargs)

    return wrapper


def _async_wrapper(core: Core, driver: AsyncDriver, options: Options) -> Callable[..., Any]:
    call = driver.call
    fast_key = core.fast_key
    local = core.local
    if fast_key is None or local is None or options.early_refresh:

        async def generic(*args: Any, **kwargs: Any) -> Any:
            return await call(args, kwargs)

        return generic

    arity = core.keys.arity
    data_get = local._data.get
    monotonic = core.monotonic
    stats = core.stats
    listeners = core.listeners

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not kwargs and len(args) == arity:
            try:
                entry = data_get(fast_key(core.token, args))
            except TypeError:
                entry = None
            if entry is not None and entry[1] > monotonic():
                stats.hits += 1
                if listeners.active:
                    core.hit_event()
                return entry[0]
        return await call(args, kwargs)

    return wrapper
