"""`RateLimiter`: per-key rate limits, in this process or shared by every process through Redis."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from typing_extensions import ParamSpec

from scalepatterns._checks import seconds
from scalepatterns._coroutines import has_async_commands, is_coroutine_callable
from scalepatterns._deps import require
from scalepatterns._redis_url import client_from_url, close_client
from scalepatterns.backpressure.algorithms import (
    GCRA,
    Algorithm,
    Decision,
    FixedWindow,
    SlidingWindow,
)
from scalepatterns.backpressure.events import RateAllowed, RateRejected, RateWaited
from scalepatterns.backpressure.rates import Rate, parse_rate
from scalepatterns.backpressure.stores import AsyncRedisStore, MemoryStore, RedisStore
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError, RateLimited
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.outage import OutageGuard

__all__ = ["RateLimiter"]

P = ParamSpec("P")
R = TypeVar("R")

_ALGORITHMS = ("gcra", "sliding-window", "fixed-window")


def _make_algorithm(rate: Rate, burst: int | None, algorithm: str) -> Algorithm:
    if algorithm == "gcra":
        return GCRA(rate, burst)
    if burst is not None:
        raise ConfigurationError(
            "burst", burst, f"None with algorithm={algorithm!r} (its burst is the limit)"
        )
    if algorithm == "sliding-window":
        return SlidingWindow(rate)
    if algorithm == "fixed-window":
        return FixedWindow(rate)
    raise ConfigurationError("algorithm", algorithm, f"one of {', '.join(_ALGORITHMS)}")


def _needs_await(key: str, cost: int) -> Decision:
    raise TypeError("this limiter uses an async Redis client: await limiter.aacquire()")


class RateLimiter:
    """Limit how often each key (a user, a client, an IP) may act.

    In this process by default; pass a redis-py client (sync or ``redis.asyncio``) to share
    the limit across every process and machine using the same Redis.

    Args:
        rate: ``"100/second"``, ``"5000/hour"``, ``"10 per minute"``, a `Rate`, or an integer
            with `period`.
        burst: units allowed at once (GCRA only; default: the rate's limit).
        period: seconds, when `rate` is an integer.
        algorithm: ``"gcra"`` (default, token-bucket equivalent), ``"sliding-window"`` or
            ``"fixed-window"``.
        redis: a redis-py ``Redis`` or ``redis.asyncio.Redis`` client (a ``RedisCluster``, or
            a Sentinel-managed one: ``Sentinel(...).master_for(name)``), or a URL to make a
            sync client from (``redis://``, ``rediss://``, ``unix://``,
            ``redis+sentinel://``; `close` closes it); None keeps the state in this
            process.
        prefix: prefix of the Redis keys (``<prefix>{<key>}``), its separator included.
        fail_open: when Redis is unreachable, allow (True, the default) or refuse calls.
        failure_threshold, cooldown: the `OutageGuard` that stops calling a dead Redis.
        name: low-cardinality name used as the events' `source`.
        clock: time source of the in-process form (the Redis form uses the server's clock).
        listeners: where events go (default: `default_listeners`).

    ```python
    from scalepatterns import FakeClock, RateLimiter

    clock = FakeClock()
    limiter = RateLimiter("2/second", clock=clock)
    assert limiter.acquire("alice") and limiter.acquire("alice")
    refused = limiter.acquire("alice")
    assert not refused.allowed and refused.retry_after == 0.5
    assert limiter.acquire("bob").allowed          # keys are independent
    clock.advance(0.5)
    assert limiter.acquire("alice").allowed
    ```
    """

    def __init__(
        self,
        rate: str | Rate | int,
        burst: int | None = None,
        *,
        period: float | None = None,
        algorithm: str = "gcra",
        redis: Any = None,
        prefix: str = "sp:rl:",
        fail_open: bool = True,
        failure_threshold: int = 3,
        cooldown: float = 5.0,
        name: str = "ratelimiter",
        clock: Clock = SYSTEM_CLOCK,
        listeners: Listeners | None = None,
    ) -> None:
        self.rate = parse_rate(rate, period)
        self.algorithm = _make_algorithm(self.rate, burst, algorithm)
        if not isinstance(fail_open, bool):
            raise ConfigurationError("fail_open", fail_open, "True or False")
        if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
            raise ConfigurationError(
                "prefix", prefix, "a non-empty string without braces (keys get a {hash tag})"
            )
        self.name = name
        self._clock = clock
        self._listeners = listeners if listeners is not None else default_listeners
        self._max_cost = self.algorithm.max_cost
        self._is_async_store = False
        seconds("cooldown", cooldown, positive=True)  # checked even while unused: no surprise later
        self._owned_client: Any = None
        self.store: MemoryStore | RedisStore | AsyncRedisStore
        if isinstance(redis, str):
            redis = self._owned_client = client_from_url(
                redis, parameter="redis", feature="RateLimiter(redis=...)"
            )
        if redis is None:
            self.store = MemoryStore(self.algorithm, clock)
        else:
            require("redis", extra="redis", feature="RateLimiter(redis=...)")
            guard = OutageGuard(failure_threshold, cooldown, clock=clock)
            options: dict[str, Any] = {
                "prefix": prefix,
                "fail_open": fail_open,
                "guard": guard,
                "listeners": self._listeners,
                "name": name,
            }
            if has_async_commands(redis):
                self.store = AsyncRedisStore(redis, self.algorithm, **options)
                self._is_async_store = True
            else:
                self.store = RedisStore(redis, self.algorithm, **options)
        self._backend = self.store.backend
        self._decide: Callable[[str, int], Decision]
        if isinstance(self.store, AsyncRedisStore):
            self._decide = _needs_await
        else:
            self._decide = self.store.decide

    @property
    def burst(self) -> int:
        """The most units one key may use at once."""
        return self._max_cost

    def _check_cost(self, cost: int) -> None:
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ConfigurationError("cost", cost, "an integer >= 1")
        if cost > self._max_cost:
            raise ConfigurationError(
                "cost", cost, f"at most the burst ({self._max_cost}), or it could never pass"
            )

    def _emit(self, decision: Decision, cost: int) -> None:
        if decision.allowed:
            self._listeners.emit(RateAllowed(self.name, cost, self._backend))
        else:
            self._listeners.emit(RateRejected(self.name, cost, decision.retry_after, self._backend))

    def acquire(self, key: str, cost: int = 1) -> Decision:
        """Decide whether `key` may spend `cost` units now; spends them if allowed.

        Raises:
            ConfigurationError: `cost` is not an integer between 1 and the burst.
            TypeError: the limiter was given an async Redis client (use `aacquire`).
        """
        if cost != 1 or type(cost) is not int:
            self._check_cost(cost)
        decision = self._decide(key, cost)
        if self._listeners.active:
            self._emit(decision, cost)
        return decision

    async def aacquire(self, key: str, cost: int = 1) -> Decision:
        """`acquire` for async code (awaits an async Redis client; memory decides inline)."""
        if cost != 1 or type(cost) is not int:
            self._check_cost(cost)
        if self._is_async_store:
            decision = await cast("AsyncRedisStore", self.store).decide(key, cost)
        else:
            decision = cast("MemoryStore | RedisStore", self.store).decide(key, cost)
        if self._listeners.active:
            self._emit(decision, cost)
        return decision

    def _check_timeout(self, timeout: float | None) -> None:
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
        ):
            raise ConfigurationError("timeout", timeout, "None or a number of seconds >= 0")

    def acquire_or_wait(self, key: str, cost: int = 1, timeout: float | None = None) -> Decision:
        """Wait (with the clock) until `key` may spend `cost` units, then spend them.

        Raises:
            RateLimited: when waiting would take longer than `timeout` seconds; it is raised
                at once, without sleeping for nothing.
        """
        self._check_timeout(timeout)
        started = self._clock.monotonic()
        while True:
            decision = self.acquire(key, cost)
            if decision.allowed:
                break
            waited = self._clock.monotonic() - started
            if timeout is not None and waited + decision.retry_after > timeout:
                raise RateLimited(key, decision.retry_after)
            self._clock.sleep(decision.retry_after)
        self._waited(started)
        return decision

    async def aacquire_or_wait(
        self, key: str, cost: int = 1, timeout: float | None = None
    ) -> Decision:
        """`acquire_or_wait` for async code: suspends the task instead of the thread."""
        self._check_timeout(timeout)
        started = self._clock.monotonic()
        while True:
            decision = await self.aacquire(key, cost)
            if decision.allowed:
                break
            waited = self._clock.monotonic() - started
            if timeout is not None and waited + decision.retry_after > timeout:
                raise RateLimited(key, decision.retry_after)
            await self._clock.asleep(decision.retry_after)
        self._waited(started)
        return decision

    def _waited(self, started: float) -> None:
        waited = self._clock.monotonic() - started
        if waited > 0 and self._listeners.active:
            self._listeners.emit(RateWaited(self.name, waited))

    def limit(
        self,
        key: str | Callable[..., str],
        *,
        cost: int = 1,
        wait: bool = False,
        timeout: float | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a ``def`` or ``async def`` so each call spends `cost` units of `key`.

        Args:
            key: a fixed key, or a callable receiving the call's arguments and returning
                the key (e.g. ``lambda user, **_: user.id``).
            wait: wait for the limit instead of raising (up to `timeout`).

        Raises (from the decorated function):
            RateLimited: the call was refused; `retry_after` says when to try again.
        """
        self._check_cost(cost)
        self._check_timeout(timeout)
        if not (isinstance(key, str) or callable(key)):
            raise TypeError("key= takes a string or a callable returning the key for a call")
        key_of: Callable[..., str] = key if callable(key) else (lambda *_a, **_k: key)

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            if is_coroutine_callable(fn):
                afn = cast("Callable[P, Awaitable[Any]]", fn)

                @functools.wraps(fn)
                async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    k = key_of(*args, **kwargs)
                    if wait:
                        await self.aacquire_or_wait(k, cost, timeout)
                    else:
                        decision = await self.aacquire(k, cost)
                        if not decision.allowed:
                            raise RateLimited(k, decision.retry_after)
                    return await afn(*args, **kwargs)

                return cast("Callable[P, R]", async_wrapper)

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                k = key_of(*args, **kwargs)
                if wait:
                    self.acquire_or_wait(k, cost, timeout)
                else:
                    decision = self.acquire(k, cost)
                    if not decision.allowed:
                        raise RateLimited(k, decision.retry_after)
                return fn(*args, **kwargs)

            return wrapper

        return decorate

    def peek(self, key: str) -> Decision:
        """What `acquire(key)` would answer now, without spending anything (for operators
        and dashboards; ``scalepatterns limiter peek``). `remaining` is the units `key`
        has now, `reset_after` the seconds until it is back to its full allowance.

        Raises:
            BackendUnavailable: Redis could not be reached (a peek never fails open).
            TypeError: the limiter has an async Redis client (peek through a sync one).
        """
        if isinstance(self.store, AsyncRedisStore):
            raise TypeError("peek needs a sync Redis client: RateLimiter(..., redis=url)")
        return self.store.peek(key)

    def close(self) -> None:
        """Disconnect the connections a sync Redis limiter made for itself.

        The client you passed stays open (it is yours); one made from a URL is closed. A
        later decision reconnects.
        """
        if isinstance(self.store, RedisStore):
            self.store.close()
        if self._owned_client is not None:
            close_client(self._owned_client)

    def __repr__(self) -> str:
        return f"RateLimiter({self.algorithm!r}, backend={self._backend!r}, name={self.name!r})"
