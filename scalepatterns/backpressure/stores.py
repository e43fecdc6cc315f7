"""Where rate-limit state lives: in this process (under a lock) or in Redis (one Lua call).

Both run the same algorithm (`scalepatterns.backpressure.algorithms`): the memory store
calls its `decide` with the injected clock; the Redis store runs its Lua mirror with the
server's clock. The Redis stores put every call behind an `OutageGuard` and, when Redis is
down, answer with the configured fallback (fail open or closed) without any I/O until the
cool-down ends.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from scalepatterns._direct_redis import DirectConnections
from scalepatterns.backpressure.algorithms import SERVER_EPOCH, Algorithm, Decision
from scalepatterns.backpressure.events import LimiterBackendFailed
from scalepatterns.clock import Clock
from scalepatterns.errors import BackendUnavailable, ConfigurationError
from scalepatterns.events import Listeners
from scalepatterns.outage import OutageGuard

__all__ = ["AsyncRedisStore", "MemoryStore", "RedisStore"]

_ONE = frozenset((b"1", "1"))


class MemoryStore:
    """Per-key state in a dict, decided under one lock; idle keys are swept periodically."""

    backend = "memory"

    def __init__(self, algorithm: Algorithm, clock: Clock) -> None:
        self._algorithm = algorithm
        self._decide = algorithm.decide
        self._expired = algorithm.expired
        self._now = clock.monotonic
        self._lock = threading.Lock()
        self._states: dict[str, Any] = {}
        self._calls = 0

    def decide(self, key: str, cost: int) -> Decision:
        with self._lock:
            states = self._states
            old = states.get(key)
            decision, new = self._decide(old, self._now(), cost)
            if new is not old:
                states[key] = new
            self._calls += 1
            if self._calls > 10_000 and self._calls > 2 * len(states):
                self._sweep()
            return decision

    def peek(self, key: str) -> Decision:
        """What one unit of `key` would get now, spending nothing."""
        with self._lock:
            return self._algorithm.peek(self._states.get(key), self._now())

    def _sweep(self) -> None:
        # Amortised O(1): runs after at least as many decisions as there are keys.
        now = self._now()
        expired = self._expired
        self._states = {k: s for k, s in self._states.items() if not expired(s, now)}
        self._calls = 0

    def __len__(self) -> int:
        return len(self._states)


def _outage_errors() -> tuple[type[BaseException], ...]:
    from redis import exceptions

    # ConnectionError covers BusyLoadingError; ReadOnlyError is a replica after failover.
    return (exceptions.ConnectionError, exceptions.TimeoutError, exceptions.ReadOnlyError, OSError)


class _RedisBase:
    backend = "redis"

    def __init__(
        self,
        client: Any,
        algorithm: Algorithm,
        *,
        prefix: str,
        fail_open: bool,
        guard: OutageGuard,
        listeners: Listeners,
        name: str,
    ) -> None:
        self.client = client
        self.algorithm = algorithm
        self.prefix = prefix
        self.fail_open = fail_open
        self.guard = guard
        self._listeners = listeners
        self._name = name
        self._outage = _outage_errors()
        from redis.exceptions import NoScriptError, ResponseError

        self._noscript = NoScriptError
        self._response_error = ResponseError
        self.script = client.register_script(algorithm.lua)
        self._sha: str = self.script.sha
        self.backend_errors = 0
        self.fallback_decisions = 0
        self._tag = f"{prefix}{{"

    def redis_key(self, key: str) -> str:
        """The Redis key holding `key`'s state: ``<prefix>{<key>}``."""
        # Redis Cluster routes the script by this one key; the {hash tag} puts it on the
        # slot of the limiter key itself, next to any key the application tags the same way.
        return f"{self.prefix}{{{key}}}"

    def _argv(self, cost: int, now: float | None) -> tuple[str, ...]:
        if now is not None:
            return (str(cost), repr(float(now)))
        return () if cost == 1 else (str(cost),)

    def _fallback(self, error: str) -> Decision:
        self.fallback_decisions += 1
        if self._listeners.active:
            self._listeners.emit(LimiterBackendFailed(self._name, error, self.fail_open))
        if self.fail_open:
            return Decision(True, 0, 0.0, 0.0)
        wait = max(self.guard.retry_after(), 0.001)
        return Decision(False, 0, wait, wait)

    def _failed(self, exc: BaseException) -> Decision:
        self.backend_errors += 1
        self.guard.record_failure()
        return self._fallback(type(exc).__name__)

    def _parse(self, reply: bytes | str) -> Decision:
        self.guard.record_success()
        allowed, remaining, retry_after, reset_after = reply.split()
        allowed_ = allowed in _ONE  # bytes, or str from a client with decode_responses=True
        return Decision(allowed_, int(remaining), float(retry_after), float(reset_after))


class RedisStore(_RedisBase):
    """State in Redis through a synchronous redis-py client (one EVALSHA per decision).

    On a plain or Sentinel-managed ``redis.Redis`` the EVALSHA goes over
    `DirectConnections`; on a Cluster or other client, through the client's ``evalsha``.
    """

    def __init__(self, client: Any, algorithm: Algorithm, **options: Any) -> None:
        super().__init__(client, algorithm, **options)
        self.direct = DirectConnections.for_client(client)
        if self.direct is not None:
            # EVALSHA <sha> 1 packed once; each call appends the key as the 4th argument.
            self._evalsha_head = b"*4" + self.direct.pack("EVALSHA", self._sha, "1")[2:]

    def _evalsha(self, key: str, cost: int, now: float | None) -> Any:
        direct = self.direct
        if direct is not None:
            if cost == 1 and now is None:  # the hot path: no arguments at all
                data = f"{self._tag}{key}}}".encode(direct.encoding, direct.encoding_errors)
                command = b"%s$%d\r\n%s\r\n" % (self._evalsha_head, len(data), data)
            else:
                argv = self._argv(cost, now)
                command = direct.pack("EVALSHA", self._sha, "1", self.redis_key(key), *argv)
            return direct.call(command)
        return self.client.evalsha(self._sha, 1, self.redis_key(key), *self._argv(cost, now))

    def _load_script(self) -> None:
        lua = self.algorithm.lua
        if self.direct is None:
            self.client.script_load(lua)
        else:
            self.direct.call(self.direct.pack("SCRIPT", "LOAD", lua))

    def peek(self, key: str) -> Decision:
        """What one unit of `key` would get now, spending nothing: the key's state and the
        server's clock, read (two commands, no script), decided by the algorithm here.

        Raises:
            BackendUnavailable: Redis could not be reached (a peek never falls back).
            ConfigurationError: the key holds another algorithm's state.
        """
        redis_key = self.redis_key(key)
        fields = self.algorithm.redis_fields
        try:
            seconds, micros = self.client.time()
            stored = self.client.hmget(redis_key, fields) if fields else self.client.get(redis_key)
        except self._outage as exc:
            raise BackendUnavailable("redis", f"reading {redis_key!r} failed: {exc}") from exc
        except self._response_error as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            raise ConfigurationError(
                "algorithm",
                self.algorithm.name,
                f"the algorithm of the limiter that wrote {redis_key!r} (it holds another "
                "algorithm's state)",
            ) from exc
        now = (int(seconds) - SERVER_EPOCH) + int(micros) / 1_000_000
        return self.algorithm.peek(self.algorithm.state_from_redis(stored), now)

    def close(self) -> None:
        """Disconnect the idle connections the limiters of this client's pool share (a
        later decision reconnects); the client itself stays yours to close."""
        if self.direct is not None:
            self.direct.close()

    def decide(self, key: str, cost: int, now: float | None = None) -> Decision:
        """Run the algorithm's script; `now` overrides the server clock (tests only)."""
        guard = self.guard
        if not guard.allow():
            return self._fallback("skipped")
        try:
            # EVALSHA straight away; the script is loaded on the first NOSCRIPT (a fresh or
            # restarted server), as redis-py's Script does, minus its per-call overhead.
            try:
                reply = self._evalsha(key, cost, now)
            except self._noscript:
                self._load_script()
                reply = self._evalsha(key, cost, now)
        except self._outage as exc:
            return self._failed(exc)
        except Exception as exc:
            guard.record_success()
            raise BackendUnavailable("redis", f"rate limit script failed: {exc}") from exc
        except BaseException:  # interrupted: no verdict on Redis, let the next call probe
            guard.release_probe()
            raise
        return self._parse(reply)


class AsyncRedisStore(_RedisBase):
    """State in Redis through a `redis.asyncio` client (one EVALSHA per decision)."""

    async def decide(self, key: str, cost: int, now: float | None = None) -> Decision:
        """Run the algorithm's script; `now` overrides the server clock (tests only)."""
        if not self.guard.allow():
            return self._fallback("skipped")
        try:
            try:
                reply = await self.client.evalsha(
                    self._sha, 1, self.redis_key(key), *self._argv(cost, now)
                )
            except self._noscript:
                reply = await self.script(keys=[self.redis_key(key)], args=self._argv(cost, now))
        except self._outage as exc:
            return self._failed(exc)
        except asyncio.CancelledError:
            self.guard.release_probe()
            raise
        except Exception as exc:
            self.guard.record_success()
            raise BackendUnavailable("redis", f"rate limit script failed: {exc}") from exc
        return self._parse(reply)
