"""Redis backends: `RedisBackend` (redis-py) and `AsyncRedisBackend` (`redis.asyncio`).

Both only move bytes; what takes more than one command (releasing a lock, tagging,
popping tags) is written once as a flow of commands (`_Commands`), run with plain calls by
`RedisBackend` and with awaits by `AsyncRedisBackend`. A `RedisCluster` client works too:
batch reads use its `mget_nonatomic` (keys of one batch may live on different slots); so
does a Sentinel-managed one (``Sentinel(...).master_for(name)``), which finds the new
master after a failover. Loaded only when a Redis cache is built, so `import scalepatterns`
never imports redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scalepatterns._deps import require
from scalepatterns._direct_redis import DirectConnections
from scalepatterns._redis_url import client_from_url
from scalepatterns._steps import Flow, adrive, drive

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


class _Commands:
    """The multi-command operations of both backends, as flows of Redis commands (see
    `_steps`): `RedisBackend` runs them with plain calls, `AsyncRedisBackend` with awaits."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.release = client.register_script(_RELEASE)
        self.tag_script = client.register_script(_TAG)
        self.lua = True  # false once the server has no scripting (fakeredis without lupa)

    def _no_scripting(self, exc: Exception) -> bool:
        if "unknown command" not in str(exc):
            return False
        self.lua = False
        return True

    def release_lock(self, key: str, token: str) -> Flow[bool]:
        if self.lua:
            try:
                released = yield self.release, ([key], [token.encode()])
                return bool(released)
            except Exception as exc:
                if not self._no_scripting(exc):
                    raise
        # Without scripting: WATCH, compare, delete in MULTI.
        pipe = self.client.pipeline(transaction=True)
        try:
            yield pipe.watch, (key,)
            if (yield pipe.get, (key,)) != token.encode():
                yield pipe.unwatch, ()
                return False
            pipe.multi()
            pipe.delete(key)
            replies = yield pipe.execute, ()
            return bool(replies[0])
        finally:
            yield pipe.reset, ()

    def tag(self, key: str, tags: Sequence[str], ttl: float | None) -> Flow[None]:
        ms = -1 if ttl is None else _ms(ttl)
        client = self.client
        for tag in tags:
            if self.lua:
                try:
                    yield self.tag_script, ([tag], [key.encode(), ms])
                    continue
                except Exception as exc:
                    if not self._no_scripting(exc):
                        raise
            yield client.sadd, (tag, key)
            if ms < 0:
                yield client.persist, (tag,)
            elif (yield client.pttl, (tag,)) < ms:
                yield client.pexpire, (tag, ms)

    def pop_tagged(self, tags: Sequence[str]) -> Flow[list[str]]:
        pipe = self.client.pipeline(transaction=False)
        for tag in tags:
            pipe.smembers(tag)
            pipe.delete(tag)
        replies = yield pipe.execute, ()
        keys: set[bytes] = set()
        for members in replies[::2]:
            keys |= set(members)
        return sorted(k.decode() for k in keys)


class RedisBackend:
    """A `CacheBackend`, `LockingBackend` and `TaggingBackend` over a redis-py client.

    On a plain or Sentinel-managed ``redis.Redis`` (RESP2, the default) reads (``GET``,
    ``MGET``) go out on the direct connections its client's pool shares with the rate
    limiters (`scalepatterns._direct_redis`): each sent at most once, never retried, up to
    the pool's ``max_connections``. Every other command, and every command of a Cluster,
    RESP3 or fake client, goes through the client.
    """

    name = "redis"

    def __init__(self, client: Any) -> None:
        self.client = client
        self._mget = getattr(client, "mget_nonatomic", client.mget)
        self._commands = _Commands(client)
        self._direct = DirectConnections.for_client(client)

    def get(self, key: str) -> bytes | None:
        if self._direct is not None:
            return self._direct.get(key)
        value: bytes | None = self.client.get(key)
        return value

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        if self._direct is not None:
            return list(self._direct.call(self._direct.pack("MGET", *keys)))
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
        return drive(self._commands.release_lock(key, token))

    def tag(self, key: str, tags: Sequence[str], ttl: float | None) -> None:
        drive(self._commands.tag(key, tags, ttl))

    def pop_tagged(self, tags: Sequence[str]) -> list[str]:
        return drive(self._commands.pop_tagged(tags))

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        self.client.close()

    def __repr__(self) -> str:
        return f"RedisBackend({type(self.client).__name__})"


class AsyncRedisBackend:
    """The `redis.asyncio` twin of `RedisBackend`."""

    name = "redis"

    def __init__(self, client: Any) -> None:
        self.client = client
        self._mget = getattr(client, "mget_nonatomic", client.mget)
        self._commands = _Commands(client)

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
        return await adrive(self._commands.release_lock(key, token))

    async def tag(self, key: str, tags: Sequence[str], ttl: float | None) -> None:
        await adrive(self._commands.tag(key, tags, ttl))

    async def pop_tagged(self, tags: Sequence[str]) -> list[str]:
        return await adrive(self._commands.pop_tagged(tags))

    async def aclose(self) -> None:
        await self.client.aclose()

    def __repr__(self) -> str:
        return f"AsyncRedisBackend({type(self.client).__name__})"
