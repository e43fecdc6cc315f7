"""Failover: how long the cache and the rate limiter go without Redis when its master dies.

A throw-away Redis master, replica and three sentinels (down-after 1 s, quorum 2, from
tests/support/redis_sentinel.py) on loopback. Each run SIGKILLs the master and then calls,
every 2 ms, a cached function and a limiter until each has been answered by Redis again:

- cache: ``Cache.redis("redis+sentinel://...")``, no memory tier; the figure is the time from
  the kill to the first hit read from Redis (a `CacheHit`; during the gap the function
  answers, fail-open);
- limiter: ``RateLimiter(redis=Sentinel(...).master_for(...))``; the time to the first
  decision made by Redis (one with no `LimiterBackendFailed`);
- promotion: the time until a sentinel names the replica as master.

Each is measured with the default outage guard (3 failures, then 5 s without Redis before a
probe) and with ``cooldown=0.5``, in the same runs. Median (min..max) of 5 runs; one run
with the short cool-down only under ``--quick``.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks.harness import Bench
from scalepatterns import Event, Listeners, OutageGuard, RateLimiter
from scalepatterns._redis_url import close_client
from scalepatterns.backpressure.events import LimiterBackendFailed
from scalepatterns.cache import Cache, CacheHit
from tests.support.redis_sentinel import SERVICE, SentinelGroup

COOLDOWNS = {"default guard (5 s cool-down)": 5.0, "cool-down 0.5 s": 0.5}
PAUSE = 0.002  # between two rounds of calls
GIVE_UP = 60.0


class _Probe:
    """One block under one guard setting: calls it and notes when Redis answers again."""

    def __init__(self, call: Callable[[], object], answered_by_redis: Callable[[], bool]) -> None:
        self.call = call
        self.answered_by_redis = answered_by_redis
        self.recovered: float | None = None

    def step(self, killed_at: float) -> None:
        if self.recovered is None:
            self.call()
            if self.answered_by_redis():
                self.recovered = time.monotonic() - killed_at


class _Flags:
    """Listeners that remember whether the last call hit Redis or failed over."""

    def __init__(self) -> None:
        self.listeners = Listeners()
        self.hit = self.fell_back = False
        self.listeners.add(self)

    def __call__(self, event: Event) -> None:
        if isinstance(event, CacheHit):
            self.hit = True
        elif isinstance(event, LimiterBackendFailed):
            self.fell_back = True

    def reset(self) -> None:
        self.hit = self.fell_back = False


def _probes(group: SentinelGroup, cooldown: float, closers: list[Any]) -> dict[str, _Probe]:
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel

    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    cache_flags, limiter_flags = _Flags(), _Flags()
    cache = Cache.redis(
        group.url,
        namespace=namespace,
        ttl=3600,
        guard=OutageGuard(3, cooldown),
        listeners=cache_flags.listeners,
    )

    @cache.cached(name="hot")
    def hot() -> str:
        return "value"

    fast = {"socket_timeout": 0.5, "retry": Retry(NoBackoff(), 0)}
    client = Sentinel(group.sentinels, sentinel_kwargs=fast, **fast).master_for(SERVICE)
    limiter = RateLimiter(
        "1000000/second",
        redis=client,
        prefix=namespace,
        cooldown=cooldown,
        listeners=limiter_flags.listeners,
    )
    closers += [cache.close, limiter.close, lambda: close_client(client)]
    hot()  # stored in Redis
    limiter.acquire("k")

    def call_cache() -> object:
        cache_flags.reset()
        return hot()

    def call_limiter() -> object:
        limiter_flags.reset()
        return limiter.acquire("k")

    return {
        "cache hit": _Probe(call_cache, lambda: cache_flags.hit),
        "limiter decision": _Probe(call_limiter, lambda: not limiter_flags.fell_back),
    }


def _one_failover(group: SentinelGroup, cooldowns: dict[str, float]) -> dict[str, float]:
    group.restore()
    closers: list[Any] = []
    try:
        probes = {
            f"{block}, {setting}": probe
            for setting, cooldown in cooldowns.items()
            for block, probe in _probes(group, cooldown, closers).items()
        }
        group.wait_replicated()
        killed = group.kill_master()
        killed_at = time.monotonic()
        promoted: float | None = None
        next_look = killed_at
        while any(p.recovered is None for p in probes.values()) or promoted is None:
            now = time.monotonic()
            if now - killed_at > GIVE_UP:
                raise TimeoutError(f"Redis did not answer again {GIVE_UP:g}s after the kill")
            if promoted is None and now >= next_look:
                next_look = now + 0.05
                if group.master_port() != killed:
                    promoted = now - killed_at
            for probe in probes.values():
                probe.step(killed_at)
            time.sleep(PAUSE)
        figures = {name: p.recovered for name, p in probes.items() if p.recovered is not None}
        return {"sentinel promotion": promoted, **figures}
    finally:
        for close in closers:
            close()


def run(bench: Bench) -> None:
    if shutil.which("redis-server") is None:
        bench.skip("redis-server is not on PATH (the throw-away Sentinel group needs it)")
    # The cache logs each time its guard opens: expected here, noise in the output.
    log = logging.getLogger("scalepatterns.cache")
    level = log.level
    log.setLevel(logging.ERROR)
    cooldowns = COOLDOWNS if not bench.quick else {"cool-down 0.5 s": 0.5}
    group = SentinelGroup()
    try:
        group.start()
        runs = [_one_failover(group, cooldowns) for _ in range(bench.scale(5, 1))]
    finally:
        group.stop()
        log.setLevel(level)
    values: dict[str, Any] = {}
    for name in runs[0]:
        seconds = [r[name] for r in runs]
        values[f"{name} (s)"] = (
            f"{statistics.median(seconds):.2f} ({min(seconds):.2f}..{max(seconds):.2f})"
        )
    bench.record(
        f"time from SIGKILL of the Redis master to the first answer from Redis again, "
        f"median (min..max) of {len(runs)} runs",
        values,
        note="Sentinel: down-after-milliseconds 1000, quorum 2 of 3, failover-timeout 2000. "
        "During the gap the cache calls the function and the limiter fails open.",
    )
