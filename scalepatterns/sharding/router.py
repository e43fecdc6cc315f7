"""`ShardRouter`: from a key to the resource (engine, client, URL...) of the shard owning it."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.sharding._keys import Key
from scalepatterns.sharding.errors import FanOutError
from scalepatterns.sharding.events import FanOutFinished, ShardRouted
from scalepatterns.sharding.placement import Placement

__all__ = ["ShardRouter", "SkewReport", "merge_sorted", "skew_report"]

R = TypeVar("R")
T = TypeVar("T")
K = TypeVar("K", bound=Key)


@dataclass(frozen=True, slots=True)
class SkewReport:
    """How evenly load is spread: ``ratio = max / mean`` (1.0 is perfectly even).

    Attributes:
        loads: ``{shard: load}``.
        max: the largest load; `hottest` is its shard.
        mean: the mean load over all shards.
        ratio: max / mean (0.0 with no load).
    """

    loads: dict[str, int]
    max: int
    mean: float
    ratio: float
    hottest: str

    def __str__(self) -> str:
        return (
            f"max/mean {self.ratio:.3f} (hottest {self.hottest}: {self.max}, "
            f"mean {self.mean:.1f} over {len(self.loads)} shards)"
        )


def skew_report(loads: Mapping[str, int]) -> SkewReport:
    """The `SkewReport` of ``{shard: load}`` (shards with no load count, with 0)."""
    values = dict(loads)
    if not values:
        return SkewReport({}, 0, 0.0, 0.0, "")
    hottest = max(values, key=lambda s: values[s])
    mean = sum(values.values()) / len(values)
    ratio = values[hottest] / mean if mean else 0.0
    return SkewReport(values, values[hottest], mean, ratio, hottest)


def merge_sorted(
    parts: Iterable[Iterable[T]],
    *,
    key: Callable[[T], Any] | None = None,
    reverse: bool = False,
    limit: int | None = None,
) -> list[T]:
    """Merge per-shard lists that are each sorted by `key` into one sorted list.

    With `limit`, stops after that many items: each shard only has to return its own
    first `limit` rows for the merged first `limit` to be right.
    """
    merged = heapq.merge(*parts, key=key, reverse=reverse)  # type: ignore[arg-type]
    return list(merged if limit is None else itertools.islice(merged, limit))


def _value(counter: itertools.count[int]) -> int:
    """The next value of an `itertools.count` without consuming it (from ``count(n)``)."""
    return int(repr(counter)[6:-1])


class ShardRouter(Generic[R]):
    """Routes keys to per-shard resources through a placement.

    The placement decides which logical shard id owns a key; `resources` maps each shard
    id to whatever serves it (an SQLAlchemy engine, a Redis client, a URL). Moving a shard
    to another server is `replace(shard, new_resource)`: no key changes shard.

    Args:
        placement: any object with ``node_for(key) -> shard id`` and ``nodes``.
        resources: ``{shard id: resource}``; every placement node needs one.
        name: the `source` of emitted events.
        max_workers: threads used by `fan_out` (default: one per shard).
        listeners: where `ShardRouted` / `FanOutFinished` go.

    ```python
    from scalepatterns.sharding import HashRing, ShardRouter

    router = ShardRouter(HashRing(["s1", "s2"]), {"s1": "db-a", "s2": "db-b"})
    assert router.for_key("alice") in {"db-a", "db-b"}
    assert sum(map(len, router.group_by_shard(["a", "b", "c"]).values())) == 3
    assert sorted(router.fan_out(lambda shard, url: url).values()) == ["db-a", "db-b"]
    ```
    """

    def __init__(
        self,
        placement: Placement,
        resources: Mapping[str, R],
        *,
        name: str = "shards",
        max_workers: int | None = None,
        listeners: Listeners | None = None,
    ) -> None:
        if not callable(getattr(placement, "node_for", None)):
            raise TypeError("placement must have a node_for(key) method, such as HashRing")
        missing = [node for node in placement.nodes if node not in resources]
        if missing:
            raise ConfigurationError(
                "resources", sorted(resources), f"a resource for every shard (missing {missing})"
            )
        self.placement = placement
        self.name = name
        self._resources: dict[str, R] = dict(resources)
        self._max_workers = max_workers
        self._listeners = default_listeners if listeners is None else listeners
        self._lock = threading.Lock()
        # One itertools.count per shard: next() on it is a single atomic C call, so
        # counting a routed key takes no lock (the value is read back from its repr).
        self._counts: dict[str, itertools.count[int]] = {s: itertools.count() for s in resources}

    # -- routing ------------------------------------------------------------------------

    def shard_for(self, key: Key) -> str:
        """The shard id owning `key` (counted in the per-shard load)."""
        shard = self.placement.node_for(key)
        try:
            next(self._counts[shard])
        except KeyError:
            self._count_new(shard)
        if self._listeners.active:
            self._listeners.emit(ShardRouted(source=self.name, shard=shard))
        return shard

    def for_key(self, key: Key) -> R:
        """The resource of the shard owning `key`."""
        shard = self.placement.node_for(key)
        try:
            next(self._counts[shard])
            resource = self._resources[shard]
        except KeyError:
            self._count_new(shard)
            resource = self._resource(shard)
        if self._listeners.active:
            self._listeners.emit(ShardRouted(source=self.name, shard=shard))
        return resource

    def _count_new(self, shard: str) -> None:
        with self._lock:
            counter = self._counts.setdefault(shard, itertools.count())
        next(counter)

    def resource(self, shard: str) -> R:
        """The resource behind shard id `shard`."""
        return self._resource(shard)

    def _resource(self, shard: str) -> R:
        try:
            return self._resources[shard]
        except KeyError:
            raise ConfigurationError(
                "resources", sorted(self._resources), f"a resource for shard {shard!r}"
            ) from None

    def group_by_shard(self, keys: Iterable[K]) -> dict[str, list[K]]:
        """``{shard id: [keys it owns]}``, keys in their given order."""
        groups: dict[str, list[K]] = {}
        for key in keys:
            groups.setdefault(self.shard_for(key), []).append(key)
        return groups

    @property
    def shards(self) -> tuple[str, ...]:
        """The shard ids, in the placement's order."""
        return tuple(self.placement.nodes)

    @property
    def resources(self) -> dict[str, R]:
        """``{shard id: resource}`` (a copy)."""
        return dict(self._resources)

    def replace(self, shard: str, resource: R) -> R:
        """Point `shard` at a new resource (a moved server); returns the old one."""
        old = self._resource(shard)
        self._resources[shard] = resource
        return old

    def add_shard(self, shard: str, resource: R) -> None:
        """Register the resource of a shard about to join the placement."""
        self._resources[shard] = resource
        with self._lock:
            self._counts.setdefault(shard, itertools.count())

    # -- hot shards ---------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Keys routed per shard since creation or the last `reset_counts`."""
        counts = self._counts
        return {shard: _value(counts[shard]) if shard in counts else 0 for shard in self.shards}

    def skew(self) -> SkewReport:
        """The skew (max/mean) of the routed keys over the current shards."""
        return skew_report(self.counts())

    def reset_counts(self) -> None:
        with self._lock:
            self._counts = {shard: itertools.count() for shard in self._resources}

    # -- fan-out ------------------------------------------------------------------------

    def fan_out(
        self,
        fn: Callable[[str, R], T],
        *,
        shards: Iterable[str] | None = None,
    ) -> dict[str, T]:
        """Run ``fn(shard, resource)`` on every shard in threads; ``{shard: result}``.

        Raises:
            FanOutError: a shard raised; `.errors` holds each failure and `.results` the
                shards that succeeded.
        """
        targets = list(self.shards if shards is None else shards)
        results: dict[str, T] = {}
        errors: dict[str, BaseException] = {}
        workers = self._max_workers or max(1, len(targets))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=self.name) as pool:
            futures = {s: pool.submit(fn, s, self._resource(s)) for s in targets}
            for shard, future in futures.items():
                failure = future.exception()
                if failure is None:
                    results[shard] = future.result()
                elif isinstance(failure, Exception):
                    errors[shard] = failure
                else:  # pragma: no cover - interrupts are not shard failures
                    raise failure
        return self._finish(targets, results, errors)

    async def afan_out(
        self,
        fn: Callable[[str, R], Awaitable[T]],
        *,
        shards: Iterable[str] | None = None,
    ) -> dict[str, T]:
        """Await ``fn(shard, resource)`` on every shard concurrently; ``{shard: result}``.

        Raises:
            FanOutError: as `fan_out`.
        """
        targets = list(self.shards if shards is None else shards)
        outcomes = await asyncio.gather(
            *(fn(s, self._resource(s)) for s in targets), return_exceptions=True
        )
        results: dict[str, T] = {}
        errors: dict[str, BaseException] = {}
        for shard, outcome in zip(targets, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome  # cancellation and interrupts are not shard failures
                errors[shard] = outcome
            else:
                results[shard] = outcome
        return self._finish(targets, results, errors)

    def _finish(
        self, targets: list[str], results: dict[str, T], errors: dict[str, BaseException]
    ) -> dict[str, T]:
        if self._listeners.active:
            self._listeners.emit(
                FanOutFinished(source=self.name, shards=len(targets), failed=len(errors))
            )
        if errors:
            raise FanOutError(errors, results) from next(iter(errors.values()))
        return results

    def fan_out_merge(
        self,
        fn: Callable[[str, R], Iterable[T]],
        *,
        key: Callable[[T], Any] | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> list[T]:
        """`fan_out`, then merge the per-shard sorted results (see `merge_sorted`)."""
        parts = self.fan_out(fn)
        return merge_sorted(
            (parts[s] for s in self.shards if s in parts), key=key, reverse=reverse, limit=limit
        )

    async def afan_out_merge(
        self,
        fn: Callable[[str, R], Awaitable[Iterable[T]]],
        *,
        key: Callable[[T], Any] | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> list[T]:
        """`afan_out`, then merge the per-shard sorted results (see `merge_sorted`)."""
        parts = await self.afan_out(fn)
        return merge_sorted(
            (parts[s] for s in self.shards if s in parts), key=key, reverse=reverse, limit=limit
        )

    def __repr__(self) -> str:
        return f"ShardRouter({self.name!r}, shards={list(self.shards)!r})"
