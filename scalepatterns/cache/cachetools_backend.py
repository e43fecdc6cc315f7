"""`CachetoolsBackend`: a `CacheBackend` over any cachetools cache, for its eviction policies.

`Cache.memory()` keeps Python objects in `MemoryBackend`, whose hits are a lock-free dict
read (FIFO eviction), the fastest in-process path. When the eviction policy matters more
than the last few hundred nanoseconds (keep the most recently or most frequently used
entries), hand the `Cache` a cachetools cache instead:

```python
import cachetools
from scalepatterns.cache import Cache, CachetoolsBackend

cache = Cache(CachetoolsBackend(cachetools.LFUCache(maxsize=1000)), namespace="lfu", ttl=60)


@cache.cached()
def square(x: int) -> int:
    return x * x


assert square(4) == square(4) == 16
assert square.cache_info().loads == 1
```

cachetools caches are not thread-safe, so every operation takes one lock. Each entry
carries its own expiry (the `ttl` of the `set`), checked on read, on top of whatever
the cachetools cache itself evicts.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import cachetools

from scalepatterns.clock import SYSTEM_CLOCK, Clock

__all__ = ["CachetoolsBackend"]

# An entry: (expires_at on the monotonic clock, value).
_Entry = tuple[float, bytes]


class CachetoolsBackend:
    """Stores entries in `cache` (any `cachetools.Cache`: `LRUCache`, `LFUCache`, ...).

    Args:
        cache: the cachetools cache to store into (default: an `LRUCache` of 10,000).
        clock: time source for per-entry expiry (`FakeClock` in tests).
    """

    name = "cachetools"

    def __init__(
        self,
        cache: cachetools.Cache[str, _Entry] | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if cache is None:
            cache = cachetools.LRUCache(maxsize=10_000)
        if not isinstance(cache, cachetools.Cache):
            raise TypeError(
                f"cache must be a cachetools cache such as cachetools.LRUCache(maxsize=...), "
                f"not {type(cache).__name__}"
            )
        self.cache = cache
        self.clock = clock
        self._lock = threading.Lock()

    def _live(self, key: str, now: float) -> bytes | None:
        entry = self.cache.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self.cache[key]
            return None
        return entry[1]

    def get(self, key: str) -> bytes | None:
        now = self.clock.monotonic()
        with self._lock:
            return self._live(key, now)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = self.clock.monotonic()
        with self._lock:
            return [self._live(key, now) for key in keys]

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        expires_at = math.inf if ttl is None else self.clock.monotonic() + ttl
        with self._lock:
            self.cache[key] = (expires_at, value)

    def delete(self, *keys: str) -> int:
        now = self.clock.monotonic()
        removed = 0
        with self._lock:
            for key in keys:
                if self._live(key, now) is not None:
                    del self.cache[key]
                    removed += 1
        return removed

    def incr(self, key: str) -> int:
        now = self.clock.monotonic()
        with self._lock:
            current = self._live(key, now)
            value = int(current) + 1 if current is not None else 1
            self.cache[key] = (math.inf, str(value).encode())
            return value

    def __repr__(self) -> str:
        return f"CachetoolsBackend({type(self.cache).__name__}(maxsize={self.cache.maxsize}))"
