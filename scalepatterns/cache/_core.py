"""What a cached function knows apart from I/O: options, keys, stats, the local tier, codecs.

One `Core` per cached function, below its flows (`_flows.py`) and the driver that runs
them (`_drivers.py`); above the `Namespace` it shares with the cache's other functions.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from scalepatterns.cache._namespace import Namespace
from scalepatterns.cache.events import (
    CacheHit,
    CacheLoad,
    CacheLoadError,
    CacheMiss,
    CacheStale,
)
from scalepatterns.cache.keys import KeyBuilder
from scalepatterns.cache.memory import MemoryBackend
from scalepatterns.cache.policy import decode_entry, encode_entry, jittered
from scalepatterns.clock import SYSTEM_CLOCK
from scalepatterns.errors import SerializationError

__all__ = ["CacheInfo", "Options"]


class CacheInfo(NamedTuple):
    """Statistics of one cached function, like `functools.lru_cache`'s `cache_info()`.

    Counters are updated without a lock: under heavy thread contention they may miss an
    increment, never the cached values.
    """

    hits: int
    misses: int
    maxsize: int | None
    currsize: int
    stale: int
    loads: int
    load_errors: int
    backend_errors: int

    @property
    def hit_ratio(self) -> float:
        """Share of calls answered from the cache (fresh or stale); 0.0 before any call."""
        served = self.hits + self.stale
        total = served + self.misses
        return served / total if total else 0.0


@dataclass(frozen=True, slots=True)
class Options:
    """The settled options of one cached function."""

    ttl: float | None
    jitter: float
    negative_ttl: float | None
    cache_none: bool
    stale_ttl: float
    stale_if_error: float
    early_refresh: float
    unless: Callable[[Any], bool] | None
    tags: Callable[..., Iterable[str]] | None
    lock: bool
    lock_ttl: float
    lock_wait: float

    @property
    def keep_extra(self) -> float:
        """How long past expiry an entry is kept for stale serving."""
        return max(self.stale_ttl, self.stale_if_error)

    @property
    def plain(self) -> bool:
        """True when the entry needs no stale or early-refresh bookkeeping."""
        return not (self.stale_ttl or self.stale_if_error or self.early_refresh)


class Stats:
    __slots__ = ("backend_errors", "hits", "load_errors", "loads", "misses", "stale")

    def __init__(self) -> None:
        self.hits = self.misses = self.stale = 0
        self.loads = self.load_errors = self.backend_errors = 0


MISSING: Any = object()


class Core:
    """Per-function state: its keys, options, counters, and the namespace it lives in."""

    def __init__(
        self,
        namespace: Namespace,
        fn: Callable[..., Any],
        keys: KeyBuilder,
        options: Options,
        rand: Callable[[], float],
    ) -> None:
        self.namespace = namespace
        self.fn = fn
        self.keys = keys
        self.options = options
        self.function = keys.prefix.rstrip(":")
        self.source = namespace.name
        self.listeners = namespace.listeners
        self.stats = Stats()
        self.local: MemoryBackend | None = namespace.local
        self.local_ttl = namespace.local_ttl
        self.serializer = namespace.serializer
        clock = namespace.clock
        self.monotonic: Callable[[], float] = (
            time.monotonic if clock is SYSTEM_CLOCK else clock.monotonic
        )
        self.wall: Callable[[], float] = time.time if clock is SYSTEM_CLOCK else clock.time
        self.clock = clock
        self.random = rand
        self.generation = namespace.generation()
        self.fast_key = keys.fast_local()

    # -- keys ----------------------------------------------------------------------------

    def local_key(self, values: tuple[Any, ...]) -> Hashable | None:
        """The local-tier key, or None when an argument is unhashable."""
        try:
            return (self.generation.token, *self.keys.local(values))
        except TypeError:
            return None

    # -- the local tier --------------------------------------------------------------------

    def ttl_for(self, value: Any) -> float | None:
        """The (jittered) TTL for a freshly loaded `value`."""
        ttl = self.options.ttl
        if value is None and self.options.negative_ttl is not None:
            ttl = self.options.negative_ttl
        if ttl is None:
            return None
        jitter = self.options.jitter
        return jittered(ttl, jitter, self.random()) if jitter else ttl

    def should_store(self, value: Any) -> bool:
        if value is None and not self.options.cache_none:
            return False
        unless = self.options.unless
        return not (unless is not None and unless(value))

    def local_put(
        self, key: Hashable, value: Any, ttl: float | None, delta: float, skey: str | None
    ) -> None:
        local = self.local
        if local is None:
            return
        now = self.monotonic()
        if skey is not None or self.namespace.shared:
            if skey is not None:
                self.namespace.index.remember(skey, key)
            # The local tier of a two-tier cache holds a short-lived copy (also while
            # Redis is down, when invalidations cannot reach it); Redis keeps the stale
            # window.
            life = self.local_ttl if ttl is None else min(ttl, self.local_ttl)
            fresh = keep = now + life
        else:
            fresh = math.inf if ttl is None else now + ttl
            keep = fresh + self.options.keep_extra
        local.put(key, (value, fresh, keep, delta))

    # -- shared entries --------------------------------------------------------------------

    def encode(self, value: Any, ttl: float | None, delta: float) -> bytes:
        try:
            payload = self.serializer.dumps(value)
        except SerializationError as exc:
            raise SerializationError(
                f"{self.function}: cannot store a {type(value).__name__} in the cache: {exc}"
            ) from exc
        if self.namespace.plain_values:
            return payload
        fresh = math.inf if ttl is None else self.wall() + ttl
        return encode_entry(payload, fresh, delta)

    def decode(self, data: bytes) -> tuple[Any, float, float]:
        """(value, fresh_until on the wall clock, load seconds); raises SerializationError."""
        payload, fresh, delta = decode_entry(data)
        return self.serializer.loads(payload), fresh, delta

    def backend_ttl(self, ttl: float | None) -> float | None:
        return None if ttl is None else ttl + self.options.keep_extra

    # -- counting and events ---------------------------------------------------------------

    def hit(self) -> None:
        self.stats.hits += 1
        if self.listeners.active:
            self.listeners.emit(CacheHit(self.source, self.function))

    def hit_event(self) -> None:
        self.listeners.emit(CacheHit(self.source, self.function))

    def miss(self) -> None:
        self.stats.misses += 1
        if self.listeners.active:
            self.listeners.emit(CacheMiss(self.source, self.function))

    def stale(self, reason: str) -> None:
        self.stats.stale += 1
        if self.listeners.active:
            self.listeners.emit(CacheStale(self.source, self.function, reason))

    def loaded(self, duration: float, early: bool) -> None:
        self.stats.loads += 1
        if self.listeners.active:
            self.listeners.emit(CacheLoad(self.source, self.function, duration, early))

    def load_failed(self, exc: BaseException) -> None:
        self.stats.load_errors += 1
        if self.listeners.active:
            self.listeners.emit(
                CacheLoadError(self.source, self.function, f"{type(exc).__name__}: {exc}")
            )

    def backend_failed(self, operation: str, exc: BaseException, name: str) -> None:
        self.stats.backend_errors += 1
        self.namespace.failed(operation, exc, name, self.function)

    def info(self) -> CacheInfo:
        s = self.stats
        local = self.local
        return CacheInfo(
            s.hits,
            s.misses,
            local.maxsize if local is not None else None,
            len(local) if local is not None else 0,
            s.stale,
            s.loads,
            s.load_errors,
            s.backend_errors,
        )

    def lock_token(self) -> str:
        return f"{random.getrandbits(64):016x}"
