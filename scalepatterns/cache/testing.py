"""The backend contract as tests: subclass `BackendContract` to prove a backend.

```python
import pytest
from scalepatterns.cache.testing import BackendContract

class TestMyBackend(BackendContract):
    @pytest.fixture
    def backend(self):
        return MyBackend(...)
```

Every built-in backend's tests subclass it (memory, fakeredis, real Redis, sharded), in
the spirit of dogpile.cache's `_GenericBackendTestSuite`. Keys are prefixed with a
random string so a suite can share a server with others. Needs pytest.
"""

from __future__ import annotations

import uuid
from typing import Any

__all__ = ["BackendContract"]


class BackendContract:
    """Behaviour every `CacheBackend` must show. Provide a `backend` pytest fixture."""

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

    def test_lock_has_one_owner_and_only_the_owner_releases(self, backend: Any) -> None:
        if not hasattr(backend, "acquire_lock"):
            return
        key = self.key("lock")
        assert backend.acquire_lock(key, "owner-a", 30)
        assert not backend.acquire_lock(key, "owner-b", 30)
        assert not backend.release_lock(key, "owner-b")
        assert backend.release_lock(key, "owner-a")
        assert backend.acquire_lock(key, "owner-b", 30)
        assert backend.release_lock(key, "owner-b")

    def test_tags_name_their_keys_once(self, backend: Any) -> None:
        if not hasattr(backend, "tag"):
            return
        tag_a, tag_b = self.key("tag-a"), self.key("tag-b")
        backend.tag(self.key("t1"), [tag_a], 60)
        backend.tag(self.key("t2"), [tag_a, tag_b], 60)
        assert backend.pop_tagged([tag_a, tag_b]) == sorted([self.key("t1"), self.key("t2")])
        assert backend.pop_tagged([tag_a]) == []
