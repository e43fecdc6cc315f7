"""Client-side sharding over several Redis servers (or logical databases).

Single-key commands go to the client of the key's shard; multi-key commands (`mget`,
`mset`, `delete`, `exists`) are split per shard, sent once per shard (concurrently in the
async client) and put back together in the caller's order. A shard whose server cannot
be reached raises `ShardUnavailable` naming it; keys on the other shards keep working.
A multi-key command runs on every reachable shard before raising for an unreachable
one, so a `delete` removes every key it can reach.

Imports redis, so `scalepatterns.sharding` loads this module only on first use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from scalepatterns._deps import require
from scalepatterns._redis_url import client_from_url
from scalepatterns.events import Listeners
from scalepatterns.sharding.errors import ShardUnavailable
from scalepatterns.sharding.placement import Placement
from scalepatterns.sharding.router import ShardRouter

redis = require("redis", extra="redis", feature="ShardedRedis")

__all__ = ["AsyncShardedRedis", "ShardedRedis"]

RedisKey = str | bytes
T = TypeVar("T")
_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def _unavailable(shard: str, exc: Exception) -> ShardUnavailable:
    return ShardUnavailable(shard, "redis", f"{type(exc).__name__}: {exc}")


def _per_shard(
    groups: dict[str, list[int]], run: Callable[[str, list[int]], T]
) -> list[tuple[list[int], T]]:
    """Run `run` on every shard's group; raise the first `ShardUnavailable` after all ran."""
    done: list[tuple[list[int], T]] = []
    failure: ShardUnavailable | None = None
    for shard, positions in groups.items():
        try:
            done.append((positions, run(shard, positions)))
        except ShardUnavailable as exc:  # noqa: PERF203 - the other shards still run
            failure = failure or exc
    if failure is not None:
        raise failure
    return done


async def _per_shard_async(
    groups: dict[str, list[int]], run: Callable[[str, list[int]], Awaitable[T]]
) -> list[tuple[list[int], T]]:
    outcomes = await asyncio.gather(
        *(run(shard, positions) for shard, positions in groups.items()), return_exceptions=True
    )
    done: list[tuple[list[int], T]] = []
    failure: BaseException | None = None
    for positions, outcome in zip(groups.values(), outcomes, strict=True):
        if isinstance(outcome, BaseException):
            failure = failure or outcome
        else:
            done.append((positions, outcome))
    if failure is not None:
        raise failure
    return done


def _in_order(count: int, parts: list[tuple[list[int], list[Any]]]) -> list[Any]:
    """The values of per-shard MGETs back in the caller's key order (None where missing)."""
    values: list[Any] = [None] * count
    for positions, found in parts:
        for index, value in zip(positions, found, strict=True):
            values[index] = value
    return values


def _group(router: ShardRouter[Any], keys: Iterable[RedisKey]) -> dict[str, list[int]]:
    """``{shard: [positions of its keys in the caller's list]}``."""
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(router.shard_for(key), []).append(index)
    return groups


class _Routed:
    """What both clients share: the router from keys to the clients of their shards."""

    _asyncio = False  # which kind of client a URL becomes

    def __init__(
        self,
        placement: Placement,
        clients: Mapping[str, Any],
        *,
        name: str = "redis-shards",
        listeners: Listeners | None = None,
    ) -> None:
        clients = {
            shard: client_from_url(
                client,
                parameter=f"clients[{shard!r}]",
                feature=type(self).__name__,
                asyncio=self._asyncio,
            )
            if isinstance(client, str)
            else client
            for shard, client in clients.items()
        }
        self.router: ShardRouter[Any] = ShardRouter(
            placement, clients, name=name, listeners=listeners
        )

    def client_for(self, key: RedisKey) -> Any:
        """The client of the shard owning `key`."""
        return self.router.for_key(key)


class ShardedRedis(_Routed):
    """Spreads keys over several `redis.Redis` clients with a placement.

    Args:
        placement: decides the shard id of each key (`HashRing`, `JumpHash`...).
        clients: ``{shard id: redis.Redis}``: separate servers, or logical databases; a
            URL in place of a client makes one.
        name: the router's name in events.

    ```python
    import fakeredis
    from scalepatterns.sharding import HashRing, ShardedRedis

    clients = {f"r{i}": fakeredis.FakeRedis() for i in range(3)}
    cache = ShardedRedis(HashRing(list(clients)), clients)
    cache.mset({f"user:{i}": i for i in range(30)})
    assert cache.mget(["user:1", "user:2", "nope"]) == [b"1", b"2", None]
    assert sum(c.dbsize() for c in clients.values()) == 30
    ```
    """

    def _on(self, shard: str, command: str, *args: Any, **options: Any) -> Any:
        try:
            return getattr(self.router.resource(shard), command)(*args, **options)
        except _DOWN as exc:
            raise _unavailable(shard, exc) from exc

    def get(self, key: RedisKey) -> Any:
        return self._on(self.router.shard_for(key), "get", key)

    def set(self, key: RedisKey, value: Any, **options: Any) -> Any:
        """`SET` on the key's shard; `options` as redis-py's (``ex``, ``px``, ``nx``...)."""
        return self._on(self.router.shard_for(key), "set", key, value, **options)

    def incr(self, key: RedisKey, amount: int = 1) -> int:
        return int(self._on(self.router.shard_for(key), "incr", key, amount))

    def expire(self, key: RedisKey, seconds: int) -> bool:
        return bool(self._on(self.router.shard_for(key), "expire", key, seconds))

    def ttl(self, key: RedisKey) -> int:
        return int(self._on(self.router.shard_for(key), "ttl", key))

    def mget(self, keys: Iterable[RedisKey]) -> list[Any]:
        """Values of `keys` in their order (None where missing): one MGET per shard."""
        keys = list(keys)
        parts = _per_shard(
            _group(self.router, keys), lambda s, p: self._on(s, "mget", [keys[i] for i in p])
        )
        return _in_order(len(keys), parts)

    def mset(self, mapping: Mapping[RedisKey, Any]) -> bool:
        """Set every pair: one MSET per shard (atomic per shard, not across shards)."""
        items = list(mapping.items())
        _per_shard(
            _group(self.router, (k for k, _ in items)),
            lambda s, p: self._on(s, "mset", dict(items[i] for i in p)),
        )
        return True

    def delete(self, *keys: RedisKey) -> int:
        """Delete `keys`: one DEL per shard; returns how many existed."""
        parts = _per_shard(
            _group(self.router, keys), lambda s, p: self._on(s, "delete", *(keys[i] for i in p))
        )
        return sum(int(count) for _, count in parts)

    def exists(self, *keys: RedisKey) -> int:
        """How many of `keys` exist: one EXISTS per shard."""
        parts = _per_shard(
            _group(self.router, keys), lambda s, p: self._on(s, "exists", *(keys[i] for i in p))
        )
        return sum(int(count) for _, count in parts)

    def fan_out(self, command: Callable[[Any], T]) -> dict[str, T]:
        """Run ``command(client)`` on every shard in threads; ``{shard: result}``."""

        def run(shard: str, client: Any) -> T:
            try:
                return command(client)
            except _DOWN as exc:
                raise _unavailable(shard, exc) from exc

        return self.router.fan_out(run)

    def close(self) -> None:
        for client in self.router.resources.values():
            client.close()


class AsyncShardedRedis(_Routed):
    """`ShardedRedis` for `redis.asyncio.Redis` clients (URLs make them); multi-key
    commands run on their shards concurrently."""

    _asyncio = True

    async def _on(self, shard: str, command: str, *args: Any, **options: Any) -> Any:
        try:
            return await getattr(self.router.resource(shard), command)(*args, **options)
        except _DOWN as exc:
            raise _unavailable(shard, exc) from exc

    async def get(self, key: RedisKey) -> Any:
        return await self._on(self.router.shard_for(key), "get", key)

    async def set(self, key: RedisKey, value: Any, **options: Any) -> Any:
        return await self._on(self.router.shard_for(key), "set", key, value, **options)

    async def incr(self, key: RedisKey, amount: int = 1) -> int:
        return int(await self._on(self.router.shard_for(key), "incr", key, amount))

    async def expire(self, key: RedisKey, seconds: int) -> bool:
        return bool(await self._on(self.router.shard_for(key), "expire", key, seconds))

    async def ttl(self, key: RedisKey) -> int:
        return int(await self._on(self.router.shard_for(key), "ttl", key))

    async def mget(self, keys: Iterable[RedisKey]) -> list[Any]:
        keys = list(keys)
        parts = await _per_shard_async(
            _group(self.router, keys), lambda s, p: self._on(s, "mget", [keys[i] for i in p])
        )
        return _in_order(len(keys), parts)

    async def mset(self, mapping: Mapping[RedisKey, Any]) -> bool:
        items = list(mapping.items())
        await _per_shard_async(
            _group(self.router, (k for k, _ in items)),
            lambda s, p: self._on(s, "mset", dict(items[i] for i in p)),
        )
        return True

    async def delete(self, *keys: RedisKey) -> int:
        parts = await _per_shard_async(
            _group(self.router, keys), lambda s, p: self._on(s, "delete", *(keys[i] for i in p))
        )
        return sum(int(count) for _, count in parts)

    async def exists(self, *keys: RedisKey) -> int:
        parts = await _per_shard_async(
            _group(self.router, keys), lambda s, p: self._on(s, "exists", *(keys[i] for i in p))
        )
        return sum(int(count) for _, count in parts)

    async def fan_out(self, command: Callable[[Any], Awaitable[T]]) -> dict[str, T]:
        """Await ``command(client)`` on every shard concurrently; ``{shard: result}``."""

        async def run(shard: str, client: Any) -> T:
            try:
                return await command(client)
            except _DOWN as exc:
                raise _unavailable(shard, exc) from exc

        return await self.router.afan_out(run)

    async def aclose(self) -> None:
        for client in self.router.resources.values():
            await client.aclose()
