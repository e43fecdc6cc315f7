"""The backend contract as tests: subclass `BackendContract` to prove a backend.

```python
import pytest
from scalepatterns.cache.testing import AsyncBackendContract, BackendContract

class TestMyBackend(BackendContract):
    @pytest.fixture
    def backend(self):
        return MyBackend(...)

class TestMyAsyncBackend(AsyncBackendContract):
    @pytest.fixture
    def async_backend(self):
        return MyAsyncBackend(...)
```

Every built-in backend's tests subclass it (memory, cachetools, fakeredis, real Redis,
Redis Cluster, sharded; the asyncio Redis backend through `AsyncBackendContract`), in the
spirit of dogpile.cache's `_GenericBackendTestSuite`. The lock and tag tests run when the
backend has those optional abilities and are skipped, with the reason, when it has not;
set `locking` or `tagging` to True to make a missing ability fail instead. Keys are
prefixed with a random string so a suite can share a server with others. Needs pytest.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

__all__ = ["AsyncBackendContract", "BackendContract"]


class BackendContract:
    """Behaviour every `CacheBackend` must show. Provide a `backend` pytest fixture."""

    locking: bool | None = None
    """True: the backend must pass the lock tests (`LockingBackend`); False: skip them;
    None: test the lock when the backend has `acquire_lock`, else skip with the reason."""
    tagging: bool | None = None
    """The same for tags (`TaggingBackend`: `tag`, `pop_tagged`)."""

    def key(self, name: str) -> str:
        if not hasattr(self, "_prefix"):
            self._prefix = f"contract-{uuid.uuid4().hex[:10]}:"
        return self._prefix + name

    def test_missing_key_is_none(self, backend: Any) -> None:
        assert backend.get(self.key("absent")) is None

    def test_set_then_get_returns_the_bytes(self, backend: Any) -> None:
        backend.set(self.key("a"), b"\x00value\xff", 60)
        assert backend.get(self.key("a")) == b"\x00value\xff"

    def test_set_without_ttl_keeps_the_value(self, backend: Any) -> None:
        backend.set(self.key("forever"), b"1", None)
        assert backend.get(self.key("forever")) == b"1"
        backend.delete(self.key("forever"))

    def test_set_overwrites(self, backend: Any) -> None:
        backend.set(self.key("o"), b"1", 60)
        backend.set(self.key("o"), b"2", 60)
        assert backend.get(self.key("o")) == b"2"

    def test_get_many_keeps_order_and_reports_misses(self, backend: Any) -> None:
        backend.set(self.key("m1"), b"one", 60)
        backend.set(self.key("m3"), b"three", 60)
        keys = [self.key("m1"), self.key("m2"), self.key("m3")]
        assert backend.get_many(keys) == [b"one", None, b"three"]
        assert backend.get_many([]) == []

    def test_delete_counts_removed_keys(self, backend: Any) -> None:
        backend.set(self.key("d1"), b"x", 60)
        assert backend.delete(self.key("d1"), self.key("d2")) == 1
        assert backend.get(self.key("d1")) is None
        assert backend.delete() == 0

    def test_incr_counts_from_one(self, backend: Any) -> None:
        key = self.key("counter")
        assert backend.incr(key) == 1
        assert backend.incr(key) == 2
        backend.delete(key)

    def _requires(self, backend: Any, declared: bool | None, method: str, ability: str) -> None:
        """Skip, with the reason, a test of an optional ability the backend lacks."""
        if declared is None:
            declared = hasattr(backend, method)
        if not declared:
            pytest.skip(f"{type(backend).__name__} is not a {ability} (an optional ability)")

    def test_lock_has_one_owner_and_only_the_owner_releases(self, backend: Any) -> None:
        self._requires(backend, self.locking, "acquire_lock", "LockingBackend")
        key = self.key("lock")
        assert backend.acquire_lock(key, "owner-a", 30)
        assert not backend.acquire_lock(key, "owner-b", 30)
        assert not backend.release_lock(key, "owner-b")
        assert backend.release_lock(key, "owner-a")
        assert backend.acquire_lock(key, "owner-b", 30)
        assert backend.release_lock(key, "owner-b")

    def test_tags_name_their_keys_once(self, backend: Any) -> None:
        self._requires(backend, self.tagging, "tag", "TaggingBackend")
        tag_a, tag_b = self.key("tag-a"), self.key("tag-b")
        backend.tag(self.key("t1"), [tag_a], 60)
        backend.tag(self.key("t2"), [tag_a, tag_b], 60)
        assert backend.pop_tagged([tag_a, tag_b]) == sorted([self.key("t1"), self.key("t2")])
        assert backend.pop_tagged([tag_a]) == []


class _Blocking:
    """An asyncio backend called like a sync one: each call is awaited on `run`'s loop."""

    def __init__(self, backend: Any, run: Callable[[Any], Any]) -> None:
        self._backend = backend
        self._run = run
        self.name = getattr(backend, "name", None)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._backend, name)
        return lambda *args: self._run(method(*args))


class AsyncBackendContract(BackendContract):
    """`BackendContract` for an `AsyncCacheBackend`: provide an `async_backend` fixture.

    The same tests, each call awaited on one event loop per test (made after the fixture,
    so a client binds to it on first use); the backend's `aclose()`, if it has one, is
    awaited on that loop at the end.
    """

    @pytest.fixture
    def backend(self, async_backend: Any) -> Iterator[Any]:
        loop = asyncio.new_event_loop()
        try:
            yield _Blocking(async_backend, loop.run_until_complete)
            aclose = getattr(async_backend, "aclose", None)
            if aclose is not None:
                loop.run_until_complete(aclose())
        finally:
            loop.close()
