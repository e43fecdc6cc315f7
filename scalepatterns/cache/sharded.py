"""`ShardedBackend`: one backend per node, each key sent to the node its placement names.

The placement is any object with `node_for(key) -> node` (a consistent-hash ring from
`scalepatterns.sharding`, or your own). Batch reads are grouped per shard, one
`get_many` per shard, and answered in the caller's order.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Protocol

from scalepatterns.cache.backend import CacheBackend
from scalepatterns.errors import ConfigurationError

__all__ = ["Placement", "ShardedBackend"]


class Placement(Protocol):
    """Names the node that owns a key."""

    def node_for(self, key: str) -> Hashable: ...


class ShardedBackend:
    """A `CacheBackend` spreading keys over `backends` as `placement` says.

    Locks and tags are routed by their own key, so they work when every shard supports them.

    Args:
        placement: an object with `node_for(key)`.
        backends: node -> the backend holding that node's keys.
    """

    name = "sharded"

    def __init__(self, placement: Placement, backends: Mapping[Hashable, CacheBackend]) -> None:
        if not callable(getattr(placement, "node_for", None)):
            raise TypeError(
                "placement must have a node_for(key) method, e.g. scalepatterns.sharding.HashRing"
            )
        if not backends:
            raise ConfigurationError("backends", backends, "at least one node -> backend")
        self.placement = placement
        self.backends = dict(backends)

    def backend_for(self, key: str) -> CacheBackend:
        """The backend that owns `key`."""
        node = self.placement.node_for(key)
        try:
            return self.backends[node]
        except KeyError:
            raise ConfigurationError(
                "placement", node, f"a node among {sorted(map(str, self.backends))}"
            ) from None

    def get(self, key: str) -> bytes | None:
        return self.backend_for(key).get(key)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        groups: dict[int, tuple[CacheBackend, list[int]]] = {}
        for index, key in enumerate(keys):
            backend = self.backend_for(key)
            groups.setdefault(id(backend), (backend, []))[1].append(index)
        result: list[bytes | None] = [None] * len(keys)
        for backend, indexes in groups.values():
            values = backend.get_many([keys[i] for i in indexes])
            for index, value in zip(indexes, values, strict=True):
                result[index] = value
        return result

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self.backend_for(key).set(key, value, ttl)

    def delete(self, *keys: str) -> int:
        return sum(self.backend_for(key).delete(key) for key in keys)

    def incr(self, key: str) -> int:
        return self.backend_for(key).incr(key)

    def acquire_lock(self, key: str, token: str, ttl: float) -> bool:
        return bool(self.backend_for(key).acquire_lock(key, token, ttl))  # type: ignore[attr-defined]

    def release_lock(self, key: str, token: str) -> bool:
        return bool(self.backend_for(key).release_lock(key, token))  # type: ignore[attr-defined]

    def tag(self, key: str, tags: Sequence[str], ttl: float | None) -> None:
        for tag in tags:
            self.backend_for(tag).tag(key, [tag], ttl)  # type: ignore[attr-defined]

    def pop_tagged(self, tags: Sequence[str]) -> list[str]:
        keys: set[str] = set()
        for tag in tags:
            keys.update(self.backend_for(tag).pop_tagged([tag]))  # type: ignore[attr-defined]
        return sorted(keys)

    def __repr__(self) -> str:
        return f"ShardedBackend({len(self.backends)} shards)"
