"""The backend contract: a handful of methods on `str` keys and `bytes` values.

A backend moves bytes; the `Cache` does everything else (keys, serialization, TTL
policy, stampede control, failure handling). Any object with these methods works, so a
user's own store plugs in without registration. Optional abilities are separate small
Protocols, checked with `isinstance` once when the `Cache` is built:

- `LockingBackend`: a lock with an owner token and an expiry, for one load per key across
  processes.
- `TaggingBackend`: sets of keys per tag, for `Cache.invalidate_tags`.

Every backend raises whatever its driver raises; the `Cache` counts the error, emits
`CacheBackendError` and goes on without the backend. Prove a backend with the suite in
`scalepatterns.cache.testing`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = [
    "AsyncCacheBackend",
    "AsyncLockingBackend",
    "AsyncTaggingBackend",
    "CacheBackend",
    "LockingBackend",
    "TaggingBackend",
]


@runtime_checkable
class CacheBackend(Protocol):
    """What every synchronous backend implements.

    `ttl` is in seconds; `None` means no expiry. `get_many` returns one item per key, in
    order, `None` for a missing key, in one round trip where the engine allows it.
    """

    name: str

    def get(self, key: str) -> bytes | None: ...

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    def set(self, key: str, value: bytes, ttl: float | None) -> None: ...

    def delete(self, *keys: str) -> int: ...

    def incr(self, key: str) -> int: ...


@runtime_checkable
class LockingBackend(Protocol):
    """A lock per key with an owner token: only the owner's release deletes it."""

    def acquire_lock(self, key: str, token: str, ttl: float) -> bool: ...

    def release_lock(self, key: str, token: str) -> bool: ...


@runtime_checkable
class TaggingBackend(Protocol):
    """Sets of keys per tag, so a tag's keys can be deleted together."""

    def tag(self, key: str, tags: Sequence[str], ttl: float | None) -> None: ...

    def pop_tagged(self, tags: Sequence[str]) -> list[str]: ...


@runtime_checkable
class AsyncCacheBackend(Protocol):
    """The asyncio twin of `CacheBackend`."""

    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def set(self, key: str, value: bytes, ttl: float | None) -> None: ...

    async def delete(self, *keys: str) -> int: ...

    async def incr(self, key: str) -> int: ...


@runtime_checkable
class AsyncLockingBackend(Protocol):
    """The asyncio twin of `LockingBackend`."""

    async def acquire_lock(self, key: str, token: str, ttl: float) -> bool: ...

    async def release_lock(self, key: str, token: str) -> bool: ...


@runtime_checkable
class AsyncTaggingBackend(Protocol):
    """The asyncio twin of `TaggingBackend`."""

    async def tag(self, key: str, tags: Sequence[str], ttl: float | None) -> None: ...

    async def pop_tagged(self, tags: Sequence[str]) -> list[str]: ...
