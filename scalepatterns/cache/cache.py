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

import contextlib
import functools
import random
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol, TypeVar, overload

from typing_extensions import ParamSpec

from scalepatterns._checks import seconds
from scalepatterns._coroutines import has_async_commands, is_coroutine_callable
from scalepatterns._redis_url import aclose_client, close_client
from scalepatterns._steps import adrive, drive
from scalepatterns.cache._core import CacheInfo, Core, Options
from scalepatterns.cache._drivers import AsyncDriver, SyncDriver
from scalepatterns.cache._hit_paths import async_wrapper, sync_wrapper
from scalepatterns.cache._namespace import Namespace
from scalepatterns.cache.keys import KeyBuilder
from scalepatterns.cache.memory import MemoryBackend
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.outage import OutageGuard
from scalepatterns.serializers import JsonSerializer, Serializer

__all__ = ["AsyncCachedFunction", "Cache", "CachedFunction"]

P = ParamSpec("P")
R = TypeVar("R")


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
        self.listeners = listeners if listeners is not None else default_listeners
        self.guard = guard if guard is not None else OutageGuard(3, 5.0, clock=clock)
        self._jitter = float(jitter)
        self._lock_ttl = float(lock_ttl)
        self._lock_wait = float(lock_wait)
        self._random: Callable[[], float] = random.random
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
        self._namespace = Namespace(
            namespace,
            backend=self.backend,
            async_backend=self.async_backend,
            local=self.local,
            guard=self.guard,
            listeners=self.listeners,
            clock=clock,
            serializer=serializer if serializer is not None else JsonSerializer(),
            plain_values=plain_values,
            local_ttl=float(local_ttl),
            version_ttl=version_ttl,
        )
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
        return self._namespace.shared

    @property
    def backend_errors(self) -> int:
        """Shared-backend failures counted so far (each also emitted as `CacheBackendError`)."""
        return self._namespace.backend_errors

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
            jitter=self._jitter,
            negative_ttl=negative_ttl,
            cache_none=cache_none,
            stale_ttl=stale_ttl,
            stale_if_error=stale_if_error,
            early_refresh=early_refresh,
            unless=unless,
            tags=tags,
            lock=lock,
            lock_ttl=self._lock_ttl,
            lock_wait=self._lock_wait,
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
        if self._namespace.plain_values and not options.plain:
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
        core = Core(self._namespace, fn, keys, options, self._random)
        if is_coroutine_callable(fn):
            if self.async_backend is not None:
                adriver = AsyncDriver(core, self.async_backend, is_async=True)
            else:
                adriver = AsyncDriver(core, self.backend, is_async=False)
            wrapper = async_wrapper(core, adriver)
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
            wrapper = sync_wrapper(core, driver)
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

    # -- invalidation ----------------------------------------------------------------------

    def invalidate_namespace(self) -> int:
        """Drop every entry of this namespace, in O(1): the namespace version moves on.

        Other processes see the new version within `version_ttl` seconds (at once in a
        two-tier cache). Returns the new version.
        """
        return drive(self._namespace.bump(self.backend))

    async def ainvalidate_namespace(self) -> int:
        """`invalidate_namespace()` for a cache with an asyncio backend."""
        if self.async_backend is None or self.backend is not None:
            return self.invalidate_namespace()
        return await adrive(self._namespace.bump(self.async_backend))

    def invalidate_tags(self, *tags: str) -> int:
        """Drop every entry stored with any of `tags`.

        Returns how many shared keys were deleted (local entries when there is no
        shared backend).
        """
        return drive(self._namespace.drop_tags(self.backend, tags))

    async def ainvalidate_tags(self, *tags: str) -> int:
        """`invalidate_tags()` for a cache with an asyncio backend."""
        if self.async_backend is None or self.backend is not None:
            return self.invalidate_tags(*tags)
        return await adrive(self._namespace.drop_tags(self.async_backend, tags))

    @property
    def unsent_invalidations(self) -> int:
        """Invalidations waiting for the shared backend to answer (0 when all were sent).

        Shared keys to delete and tags to pop, made while it was unreachable; they are sent
        before this cache reads it again, and by a background sender as soon as it answers.
        """
        return len(self._namespace.unsent)

    # -- two-tier invalidation messages and background work --------------------------------

    @property
    def channel(self) -> str:
        """The Redis pub/sub channel this cache's invalidations travel on (two-tier)."""
        return self._namespace.channel

    def listen_for_invalidations(self, client: Any) -> None:
        """Publish this cache's invalidations on, and apply other processes' from, the
        namespace's channel of the redis-py `client` (two-tier caches)."""
        self._namespace.listen(client)

    def wait_background(self, timeout: float | None = 10.0) -> bool:
        """Wait up to `timeout` seconds (None: no limit) for the background refreshes
        submitted so far; True when all of them finished.

        A refresh still running at the deadline (a hung loader) finishes on its own thread;
        the cache starts a fresh pool for later refreshes.
        """
        return self._namespace.refreshes.wait(timeout)

    def close(self) -> None:
        """Stop the pub/sub listener and background refreshes; close the sync client
        `Cache.redis(url)` made (use `aclose()` to close its asyncio client too)."""
        self._namespace.close()
        if self._owns_clients and self.backend is not None:
            with contextlib.suppress(Exception):
                close_client(self.backend.client)

    async def aclose(self) -> None:
        """`close()`, and close the asyncio client `Cache.redis(url)` made."""
        await self._namespace.astop_sender()
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
