"""`MemoryBackend`: the in-process store, a dict with per-entry expiry and a size bound.

Reads are a lock-free `dict.get` plus an expiry comparison; writes, evictions, locks
and tags take one lock. When the store is full, expired entries at the old end are
dropped first, then the oldest written entry (FIFO: cheaper than LRU bookkeeping on
every hit, and a hot key is rewritten on each refresh anyway).

The `Cache` keeps Python objects here directly (no serialization) under tuple keys; the
`CacheBackend` methods (`get`/`set`/... on `str` keys and `bytes`) make the same store
usable as a plain backend, which is what the conformance suite checks.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError

__all__ = ["MemoryBackend"]

# An entry: (value, fresh_until, keep_until, load_seconds), times on the monotonic clock.
Entry = tuple[Any, float, float, float]
_INF = math.inf


class MemoryBackend:
    """An in-process store bounded to `maxsize` entries.

    Args:
        maxsize: most entries kept (>= 1).
        clock: time source (`FakeClock` in tests).
    """

    name = "memory"

    def __init__(self, maxsize: int = 10_000, *, clock: Clock = SYSTEM_CLOCK) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 1:
            raise ConfigurationError("maxsize", maxsize, "an integer >= 1")
        self.maxsize = maxsize
        self.clock = clock
        self._data: dict[Hashable, Entry] = {}
        self.entry: Callable[[Hashable], Entry | None] = self._data.get
        """The entry under a key, expired or not, read without a lock: the cache's hit path."""
        self._lock = threading.Lock()
        self._locks: dict[str, tuple[str, float]] = {}
        self._tags: dict[str, set[str]] = {}

    # -- the object store the Cache uses -------------------------------------------------

    def put(self, key: Hashable, entry: Entry) -> None:
        """Store `entry` under `key`, evicting to stay within `maxsize`."""
        data = self._data
        with self._lock:
            data.pop(key, None)
            data[key] = entry
            if len(data) > self.maxsize:
                self._evict()

    def _evict(self) -> None:
        data = self._data
        now = self.clock.monotonic()
        # Drop expired entries at the old end first (bounded scan), then the oldest.
        for _ in range(8):
            if len(data) <= self.maxsize:
                return
            oldest = next(iter(data))
            if data[oldest][2] > now:
                break
            del data[oldest]
        while len(data) > self.maxsize:
            del data[next(iter(data))]

    def pop(self, key: Hashable) -> Entry | None:
        with self._lock:
            return self._data.pop(key, None)

    def clear(self) -> None:
        """Drop every entry, lock and tag."""
        with self._lock:
            self._data.clear()
            self._locks.clear()
            self._tags.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    # -- CacheBackend ----------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[2] <= self.clock.monotonic():
            self.pop(key)
            return None
        value: bytes = entry[0]
        return value

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self.get(key) for key in keys]

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        until = _INF if ttl is None else self.clock.monotonic() + ttl
        self.put(key, (value, until, until, 0.0))

    def delete(self, *keys: str) -> int:
        with self._lock:
            return sum(self._data.pop(key, None) is not None for key in keys)

    def incr(self, key: str) -> int:
        with self._lock:
            entry = self._data.get(key)
            value = int(entry[0]) + 1 if entry is not None else 1
            self._data[key] = (str(value).encode(), _INF, _INF, 0.0)
            return value

    # -- LockingBackend --------------------------------------------------------------------

    def acquire_lock(self, key: str, token: str, ttl: float) -> bool:
        now = self.clock.monotonic()
        with self._lock:
            held = self._locks.get(key)
            if held is not None and held[1] > now:
                return False
            self._locks[key] = (token, now + ttl)
            return True

    def release_lock(self, key: str, token: str) -> bool:
        with self._lock:
            held = self._locks.get(key)
            if held is None or held[0] != token:
                return False
            del self._locks[key]
            return True

    # -- TaggingBackend --------------------------------------------------------------------

    def tag(self, key: str, tags: Sequence[str], ttl: float | None) -> None:
        with self._lock:
            for tag in tags:
                self._tags.setdefault(tag, set()).add(key)

    def pop_tagged(self, tags: Sequence[str]) -> list[str]:
        with self._lock:
            keys: set[str] = set()
            for tag in tags:
                keys |= self._tags.pop(tag, set())
        return sorted(keys)

    def __repr__(self) -> str:
        return f"MemoryBackend(maxsize={self.maxsize}, entries={len(self._data)})"
