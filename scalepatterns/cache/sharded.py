"""`ShardedBackend`: one backend per node, each key sent to the node its placement names.

The placement is any object with `node_for(key) -> node` (a consistent-hash ring from
`scalepatterns.sharding`, or your own). Batch reads are grouped per shard, one
`get_many` per shard, and answered in the caller's order.

Each shard has its own `OutageGuard`: a dead shard's keys become misses (reads) and
no-ops (writes) for a cool-down, with no I/O, while the other shards keep serving. Its
failures are still raised to the `Cache` (counted, emitted) until its guard opens.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar, cast

from scalepatterns.cache.backend import CacheBackend, LockingBackend, TaggingBackend
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError
from scalepatterns.outage import OutageGuard
from scalepatterns.sharding.errors import ShardUnavailable
from scalepatterns.sharding.placement import Placement

T = TypeVar("T")

__all__ = ["Placement", "ShardedBackend"]


class ShardedBackend:
    """A `CacheBackend` spreading keys over `backends` as `placement` says.

    Locks and tags are routed by their own key, so they work when every shard supports them.

    Args:
        placement: an object with `node_for(key)`.
        backends: node -> the backend holding that node's keys.
        failure_threshold, cooldown, clock: each shard's `OutageGuard`.
    """

    name = "sharded"

    def __init__(
        self,
        placement: Placement,
        backends: Mapping[Hashable, CacheBackend],
        *,
        failure_threshold: int = 3,
        cooldown: float = 5.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not callable(getattr(placement, "node_for", None)):
            raise TypeError(
                "placement must have a node_for(key) method, e.g. scalepatterns.sharding.HashRing"
            )
        if not backends:
            raise ConfigurationError("backends", backends, "at least one node -> backend")
        self.placement = placement
        self.backends = dict(backends)
        self.guards = {
            node: OutageGuard(failure_threshold, cooldown, clock=clock) for node in self.backends
        }

    def node_for(self, key: str) -> Hashable:
        """The node that owns `key`."""
        node = self.placement.node_for(key)
        if node not in self.backends:
            raise ConfigurationError(
                "placement", node, f"a node among {sorted(map(str, self.backends))}"
            )
        return node

    def backend_for(self, key: str) -> CacheBackend:
        """The backend that owns `key`."""
        return self.backends[self.node_for(key)]

    def _on(self, node: Hashable, default: T, call: Callable[[CacheBackend], T]) -> T:
        guard = self.guards[node]
        if not guard.allow():
            return default  # this shard is cooling down: no I/O
        try:
            result = call(self.backends[node])
        except Exception as exc:
            guard.record_failure()
            raise ShardUnavailable(
                str(node), self.backends[node].name, f"{type(exc).__name__}: {exc}"
            ) from exc
        guard.record_success()
        return result

    def get(self, key: str) -> bytes | None:
        return self._on(self.node_for(key), None, lambda b: b.get(key))

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        groups: dict[Hashable, list[int]] = {}
        for index, key in enumerate(keys):
            groups.setdefault(self.node_for(key), []).append(index)
        result: list[bytes | None] = [None] * len(keys)
        for node, indexes in groups.items():
            wanted = [keys[i] for i in indexes]
            values = self._on(node, [None] * len(wanted), lambda b, w=wanted: b.get_many(w))  # type: ignore[misc]
            for index, value in zip(indexes, values, strict=True):
                result[index] = value
        return result

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._on(self.node_for(key), None, lambda b: b.set(key, value, ttl))

    def delete(self, *keys: str) -> int:
        return sum(self._on(self.node_for(k), 0, lambda b, k=k: b.delete(k)) for k in keys)  # type: ignore[misc]

    def incr(self, key: str) -> int:
        node = self.node_for(key)
        try:
            return self.backends[node].incr(key)  # a version counter: never silently skipped
        except Exception as exc:
            raise ShardUnavailable(
                str(node), self.backends[node].name, f"{type(exc).__name__}: {exc}"
            ) from exc

    def acquire_lock(self, key: str, token: str, ttl: float) -> bool | None:
        """True/False as the shard answers; None while the shard is skipped (the caller
        then loads without the lock rather than wait for a holder that cannot exist)."""
        got = self._on(
            self.node_for(key),
            None,
            lambda b: cast("LockingBackend", b).acquire_lock(key, token, ttl),
        )
        return None if got is None else bool(got)

    def release_lock(self, key: str, token: str) -> bool:
        return bool(
            self._on(
                self.node_for(key),
                False,
                lambda b: cast("LockingBackend", b).release_lock(key, token),
            )
        )

    def tag(self, key: str, tags: Sequence[str], ttl: float | None) -> None:
        for tag in tags:
            self._on(
                self.node_for(tag),
                None,
                lambda b, t=tag: cast("TaggingBackend", b).tag(key, [t], ttl),  # type: ignore[misc]
            )

    def pop_tagged(self, tags: Sequence[str]) -> list[str]:
        keys: set[str] = set()
        for tag in tags:
            keys.update(
                self._on(
                    self.node_for(tag),
                    [],
                    lambda b, t=tag: cast("TaggingBackend", b).pop_tagged([t]),  # type: ignore[misc]
                )
            )
        return sorted(keys)

    def __repr__(self) -> str:
        return f"ShardedBackend({len(self.backends)} shards)"
