"""Redis backends: `RedisBackend` (redis-py) and `AsyncRedisBackend` (`redis.asyncio`).

Both only move bytes. A `RedisCluster` client works too: batch reads use its
`mget_nonatomic` (keys of one batch may live on different slots); so does a
Sentinel-managed one (``Sentinel(...).master_for(name)``), which finds the new master
after a failover. Loaded only when a
Redis cache is built, so `import scalepatterns` never imports redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scalepatterns._deps import require
from scalepatterns._redis_url import client_from_url

__all__ = ["AsyncRedisBackend", "RedisBackend", "connect", "connect_async"]

# Delete the lock only if the caller still owns it: a loader that outlived its lock
# cannot release the lock another process took after it expired.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

# Add a key to a tag set; the set lives as long as the longest-lived entry it names.
_TAG = """
local pttl = redis.call('pttl', KEYS[1])
redis.call('sadd', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if ttl < 0 then
    redis.call('persist', KEYS[1])
elseif pttl == -2 or (pttl >= 0 and pttl < ttl) then
    redis.call('pexpire', KEYS[1], ttl)
end
return 1
"""


def _ms(ttl: float) -> int:
    return max(1, round(ttl * 1000))


def _client_kwargs(socket_timeout: float) -> dict[str, Any]:
    retry = require("redis.retry", extra="redis", feature="Cache.redis()")
    backoff = require("redis.backoff", extra="redis", feature="Cache.redis()")
    # No driver-level retries: the cache's outage guard decides when to try again,
    # so a dead Redis costs one failed attempt, not several.
    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": retry.Retry(backoff.NoBackoff(), 0),
    }


def connect(url: str, *, socket_timeout: float = 0.5) -> Any:
    """A redis-py client for `url` (``redis+sentinel://`` too) with short timeouts and no
    driver retries."""
    return client_from_url(
        url, parameter="client_or_url", feature="Cache.redis()", **_client_kwargs(socket_timeout)
    )


def connect_async(url: str, *, socket_timeout: float = 0.5) -> Any:
    """A `redis.asyncio` client for `url` (``redis+sentinel://`` too) with short timeouts
    and no driver retries."""
    return client_from_url(
        url,
        parameter="client_or_url",
        feature="Cache.redis()",
        asyncio=True,
        **_client_kwargs(socket_timeout),
    )


class RedisBackend:
    """A `CacheBackend`, `LockingBackend` and `TaggingBackend` over a redis-py client."""

    name = "redis"

    def __init__(self, client: Any) -> None:
        self.client = client
        self._mget = getattr(client, "mget_nonatomic", client.mget)
        self._release = client.register_script(_RELEASE)
        self._tag = client.register_script(_TAG)
        self._lua = True

    def get(self, key: str) -> bytes | None:
        value: bytes | None = self.client.get(key)
        return value

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        return list(self._mget(list(keys)))

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        if ttl is None:
            self.client.set(key, value)
        else:
            self.client.set(key, value, px=_ms(ttl))

    def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        return int(self.client.delete(*keys))

    def incr(self, key: str) -> int:
        return int(self.client.incr(key))

    def acquire_lock(self, key: str, token: str, ttl: float) -> bool:
        return bool(self.client.set(key, token.encode(), nx=True, px=_ms(ttl)))

    def release_lock(self, key: str, token: str) -> bool:
        if self._lua:
            try:
                return bool(self._release(keys=[key], args=[token.encode()]))
            except Exception as exc:
                if "unknown command" not in str(exc):
                    raise
                self._lua = False  # a server without scripting (fakeredis): WATCH instead
        with self.client.pipeline(transaction=True) as pipe:
            pipe.watch(key)
            if pipe.get(key) != token.encode():
                pipe.unwatch()
                return False
            pipe.multi()
            pipe.delete(key)
            return bool(pipe.execute()[0])

    def tag(self, key: str, tags: Sequence[str], ttl: float | None) -> None:
        ms = -1 if ttl is None else _ms(ttl)
        for tag in tags:
            if self._lua:
                try:
                    self._tag(keys=[tag], args=[key.encode(), ms])
                    continue
                except Exception as exc:
                    if "unknown command" not in str(exc):
                        raise
                    self._lua = False
            self.client.sadd(tag, key)
            if ms < 0:
                self.client.persist(tag)
            elif self.client.pttl(tag) < ms:
                self.client.pexpire(tag, ms)

    def pop_tagged(self, tags: Sequence[str]) -> list[str]:
        pipe = self.client.pipeline(transaction=False)
        for tag in tags:
            pipe.smembers(tag)
            pipe.delete(tag)
        replies = pipe.execute()
        keys: set[bytes] = set()
        for members in replies[::2]:
            keys |= set(members)
        return sorted(k.decode() for k in keys)

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"RedisBackend({type(self.client).__name__})"


class AsyncRedisBackend:
    """The `redis.asyncio` twin of `RedisBackend`."""

    name = "redis"

    def __init__(self, client: Any) -> None:
        self.client = client
        self._mget = getattr(client, "mget_nonatomic", client.mget)
        self._release = client.register_script(_RELEASE)
        self._tag = client.register_script(_TAG)
        self._lua = True

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self.client.get(key)
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        return list(await self._mget(list(keys)))

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        if ttl is None:
            await self.client.set(key, value)
        else:
            await self.client.set(key, value, px=_ms(ttl))

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        return int(await self.client.delete(*keys))

    async def incr(self, key: str) -> int:
        return int(await self.client.incr(key))

    async def acquire_lock(self, key: str, token: str, ttl: float) -> bool:
        return bool(await self.client.set(key, token.encode(), nx=True, px=_ms(ttl)))

    async def release_lock(self, key: str, token: str) -> bool:
        if self._lua:
            try:
                return bool(await self._release(keys=[key], args=[token.encode()]))
            except Exception as exc:
                if "unknown command" not in str(exc):
                    raise
                self._lua = False
        async with self.client.pipeline(transaction=True) as pipe:
            await pipe.watch(key)
            if await pipe.get(key) != token.encode():
                await pipe.unwatch()
                return False
            pipe.multi()
            pipe.delete(key)
            return bool((await pipe.execute())[0])

    async def tag(self, key: str, tags: Sequence[str], ttl: float | None) -> None:
        ms = -1 if ttl is None else _ms(ttl)
        for tag in tags:
            if self._lua:
                try:
                    await self._tag(keys=[tag], args=[key.encode(), ms])
                    continue
                except Exception as exc:
                    if "unknown command" not in str(exc):
                        raise
                    self._lua = False
            await self.client.sadd(tag, key)
            if ms < 0:
                await self.client.persist(tag)
            elif await self.client.pttl(tag) < ms:
                await self.client.pexpire(tag, ms)

    async def pop_tagged(self, tags: Sequence[str]) -> list[str]:
        pipe = self.client.pipeline(transaction=False)
        for tag in tags:
            pipe.smembers(tag)
            pipe.delete(tag)
        replies = await pipe.execute()
        keys: set[bytes] = set()
        for members in replies[::2]:
            keys |= set(members)
        return sorted(k.decode() for k in keys)

    async def aclose(self) -> None:
        await self.client.aclose()

    def __repr__(self) -> str:
        return f"AsyncRedisBackend({type(self.client).__name__})"
