"""Stores through which breakers of one name share "open until" across processes.

`RedisBreakerState` keeps one key per breaker, ``<prefix><name>``, holding the wall-clock
time the breaker is open until, with an expiry at that moment: when it expires the
fleet's breakers go half-open on their own. A process that sees the key while closed
opens too. The store is read at most once per `sync_interval` per process (see
`CircuitBreaker`), so sharing costs no Redis round trip on most calls.

A dead Redis never breaks a breaker: failures are logged and the breaker goes on
deciding locally; an `OutageGuard` stops trying Redis for a cool-down.
"""

from __future__ import annotations

import threading
from typing import Any

from scalepatterns._redis_url import client_from_url, close_client, server_of
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import BackendUnavailable, ConfigurationError
from scalepatterns.outage import OutageGuard

__all__ = ["MemoryBreakerState", "RedisBreakerState"]


class MemoryBreakerState:
    """An in-process shared store: breakers of one name in one process trip together."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[str, float] = {}

    def publish_open(self, name: str, until: float) -> None:
        with self._lock:
            self._open[name] = until

    def read_open(self, name: str) -> float | None:
        with self._lock:
            until = self._open.get(name)
            if until is not None and until <= self._clock.time():
                del self._open[name]
                return None
            return until

    def clear(self, name: str) -> None:
        with self._lock:
            self._open.pop(name, None)


class RedisBreakerState:
    """Breaker state shared through Redis (a redis-py ``Redis`` client, sync).

    Args:
        client: a ``redis.Redis`` (a Sentinel-managed one too:
            ``Sentinel(...).master_for(name)``), anything with ``get``,
            ``set(..., px=)``, ``delete`` (fakeredis works for tests), or a URL to make a
            client from (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``;
            `close` closes it).
        prefix: key prefix; give each application (and each test) its own.
        guard: the `OutageGuard` that skips a dead Redis (default: 3 failures, 5 s).
        clock: wall-clock source for expiries.

    Example:

    ```python
    from scalepatterns.resilience import CircuitBreaker, RedisBreakerState

    shared = RedisBreakerState("redis://localhost:6379/0", prefix="docs:breaker:")
    a = CircuitBreaker(name="search", shared=shared, minimum_calls=1, window=1)
    b = CircuitBreaker(name="search", shared=shared, sync_interval=0)
    a.trip()                      # one process opens...
    assert b.state == "open"      # ...and the other sees it
    ```
    """

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "sp:breaker:",
        guard: OutageGuard | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._owned_client: Any = None
        if isinstance(client, str):
            client = self._owned_client = client_from_url(
                client, parameter="client", feature="RedisBreakerState"
            )
        for method in ("get", "set", "delete"):
            if not callable(getattr(client, method, None)):
                raise TypeError(
                    f"client must be a redis.Redis-like object with {method}(), "
                    f"not {type(client).__name__}"
                )
        if not isinstance(prefix, str):
            raise ConfigurationError("prefix", prefix, "a string")
        self._client = client
        self.prefix = prefix
        self._guard = guard or OutageGuard(clock=clock)
        self._clock = clock
        self._server = server_of(client)

    def _run(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not self._guard.allow():
            raise BackendUnavailable("redis", f"skipped {what}: Redis is cooling down")
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            self._guard.record_failure()
            raise BackendUnavailable(
                "redis", f"{what} at {self._server} failed: {type(exc).__name__}"
            ) from exc
        self._guard.record_success()
        return result

    def publish_open(self, name: str, until: float) -> None:
        ttl_ms = max(1, int((until - self._clock.time()) * 1000))
        self._run("publish", self._client.set, self.prefix + name, repr(until), px=ttl_ms)

    def read_open(self, name: str) -> float | None:
        raw = self._run("read", self._client.get, self.prefix + name)
        if raw is None:
            return None
        until = float(raw.decode() if isinstance(raw, bytes) else raw)
        return until if until > self._clock.time() else None

    def clear(self, name: str) -> None:
        self._run("clear", self._client.delete, self.prefix + name)

    def open_until(self, name: str) -> tuple[float, float] | None:
        """(wall-clock time the breaker `name` is open until, seconds left), or None when
        no process has it open; read-only, for operators (``scalepatterns breaker
        status``). Unlike `read_open`, it asks Redis even while the guard cools down.

        Raises:
            BackendUnavailable: Redis could not be reached.
        """
        try:
            raw = self._client.get(self.prefix + name)
        except Exception as exc:
            raise BackendUnavailable(
                "redis", f"read at {self._server} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if raw is None:
            return None
        until = float(raw.decode() if isinstance(raw, bytes) else raw)
        left = until - self._clock.time()
        return (until, left) if left > 0 else None

    def close(self) -> None:
        """Close the client made from a URL (a client you passed stays yours)."""
        if self._owned_client is not None:
            close_client(self._owned_client)

    def __repr__(self) -> str:
        return f"RedisBreakerState(prefix={self.prefix!r}, server={self._server!r})"
