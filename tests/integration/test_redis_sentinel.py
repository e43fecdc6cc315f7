"""Redis behind Sentinel: the master is SIGKILLed, a replica promoted, and every block that
keeps state in Redis carries on with the new master, without a restart.

One throw-away group (master, replica, three sentinels) serves the module; each test that
kills the master gets the topology back first (`sentinel` fixture). Guards cool down for
0.5 s here so the tests do not wait out the default 5 s; the figures with the defaults are
in benchmarks/failover.py.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from scalepatterns import ConfigurationError, Event, Listeners, OutageGuard, RateLimiter
from scalepatterns._redis_url import aclose_client, close_client
from scalepatterns.backpressure.events import LimiterBackendFailed, RateAllowed, RateRejected
from scalepatterns.cache import Cache
from scalepatterns.errors import BackendUnavailable
from scalepatterns.queue.dedup import Claim, RedisDedupStore
from scalepatterns.resilience import RedisBreakerState
from tests.support.redis_sentinel import SERVICE, SentinelGroup

pytestmark = pytest.mark.redis

RATE, BURST = 20, 20  # "20/second": GCRA lets 20 through at once, then one per 50 ms
COOLDOWN = 0.5


def master_client(group: SentinelGroup) -> Any:
    """The redis-py idiom, as docs/scaling-out.md shows it: a client whose connections
    find the master through Sentinel, with short timeouts and no driver retries."""
    fast = {"socket_timeout": 0.5, "retry": Retry(NoBackoff(), 0)}
    return Sentinel(group.sentinels, sentinel_kwargs=fast, **fast).master_for(SERVICE)


@pytest.fixture
def raw(sentinel: SentinelGroup) -> Iterator[Any]:
    """A plain Sentinel client for checking what the master holds."""
    client = master_client(sentinel)
    yield client
    close_client(client)


def poll(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {what}")
        time.sleep(0.02)


def retrying(call: Callable[[], Any], timeout: float = 30.0) -> Any:
    """`call()`'s result once it stops raising `BackendUnavailable` (the guard's cool-down,
    a connection to the dead master dropped on first use)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except BackendUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Decisions:
    """Counts the limiter's events: what Redis decided, and what fail-open let through."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.listeners = Listeners()
        self.listeners.add(self)

    def __call__(self, event: Event) -> None:
        if isinstance(event, LimiterBackendFailed):
            self.counts["fail-open" if event.allowed else "fail-closed"] += 1
        elif isinstance(event, RateAllowed):
            self.counts["allowed"] += 1
        elif isinstance(event, RateRejected):
            self.counts["rejected"] += 1

    @property
    def allowed_by_redis(self) -> int:
        # A fallback decision emits LimiterBackendFailed and then RateAllowed.
        return self.counts["allowed"] - self.counts["fail-open"]


def assert_within_the_limit(decisions: Decisions, elapsed: float) -> None:
    """GCRA admits at most rate x window + burst; fail-open adds what it let through."""
    assert decisions.counts["fail-open"] > 0, "the gap never showed: nothing failed open"
    assert decisions.counts["rejected"] > 0, "Redis never refused: the limit was not tested"
    bound = RATE * elapsed + BURST
    assert decisions.allowed_by_redis <= bound, (decisions.counts, elapsed)
    assert decisions.counts["allowed"] <= bound + decisions.counts["fail-open"]


def test_sentinel_urls_reach_the_master_for_the_blocks_that_take_a_url(
    sentinel: SentinelGroup, raw: Any, unique_name: str
) -> None:
    cache = Cache.redis(sentinel.url, namespace=unique_name)
    dedup = RedisDedupStore(sentinel.url, prefix=f"{unique_name}:dedup:")

    @cache.cached(ttl=60, name="answer")
    def answer() -> int:
        return 42

    assert answer() == 42
    assert dedup.claim("m1", 60) is Claim.ACQUIRED
    master = sentinel.master_port()
    stored = sentinel.ask(master, "KEYS", f"{unique_name}*")
    assert len(stored) == 2  # the entry and the mark, on the master the sentinels name
    assert raw.get(f"{unique_name}:dedup:m1") == b"busy"
    cache.close()
    close_client(dedup._client)  # the store has no close(); the client is the URL's
    with pytest.raises(ConfigurationError, match="client_or_url"):
        Cache.redis("redis+sentinel://127.0.0.1:1", namespace=unique_name)


def test_cache_answers_through_a_failover_and_applies_the_invalidations_made_during_it(
    sentinel: SentinelGroup, raw: Any, unique_name: str
) -> None:
    """Two two-tier caches (two processes) and a Redis-only one; the master dies while
    values they cached are invalidated."""
    guard: Callable[[], OutageGuard] = lambda: OutageGuard(3, COOLDOWN)  # noqa: E731
    writer = Cache.two_tier(sentinel.url, namespace=unique_name, local_ttl=300, guard=guard())
    reader_client = master_client(sentinel)
    reader = Cache.two_tier(reader_client, namespace=unique_name, local_ttl=300, guard=guard())
    db = {"price": 1, "stock": 1}
    loads: collections.Counter[tuple[str, str]] = collections.Counter()

    def cached(cache: Cache, who: str) -> Any:
        @cache.cached(ttl=3600, name="item", tags=lambda item: [item])
        def item(name: str) -> int:
            loads[who, name] += 1
            return db[name]

        return item

    write, read = cached(writer, "writer"), cached(reader, "reader")
    assert [write("price"), write("stock"), read("price"), read("stock")] == [1, 1, 1, 1]
    assert loads == {("writer", "price"): 1, ("writer", "stock"): 1}  # the reader hit Redis
    entries = sorted(k for k in raw.keys(f"{unique_name}:*") if b"__" not in k)
    assert len(entries) == 2
    sentinel.wait_replicated()  # the replica that will be promoted holds both entries

    killed = sentinel.kill_master()
    db["price"] = db["stock"] = 2
    write.invalidate("price")
    writer.invalidate_tags("stock")
    assert writer.unsent_invalidations == 2  # Redis is gone: kept, not lost
    answers = []
    while sentinel.master_port() == killed:  # the gap: calls answer from the function
        answers += [write("price"), write("stock")]
        time.sleep(0.01)
    sentinel.wait_for_promotion(killed)
    assert set(answers) == {2}  # every call in the gap answered, with the new value
    assert writer.backend_errors > 0

    poll(lambda: writer.unsent_invalidations == 0, "the invalidations reached the new master")
    assert raw.exists(*entries) == 0  # gone from the promoted replica, which had them

    # The reader's subscriber found the new master: its memory tier was dropped (it may
    # have missed messages) and it hears invalidations published there.
    channel = writer.channel
    poll(lambda: raw.pubsub_numsub(channel) == [(channel.encode(), 2)], "both subscribed")
    poll(lambda: read("price") == 2, "the reader sees the invalidation made in the gap")
    assert read("stock") == 2
    db["price"] = 3
    write.invalidate("price")
    poll(lambda: read("price") == 3, "the reader's memory tier heard the new master")
    writer.close()
    reader.close()
    close_client(reader_client)


def test_limiter_dedup_and_breaker_state_carry_on_after_a_failover(
    sentinel: SentinelGroup, raw: Any, unique_name: str
) -> None:
    client = master_client(sentinel)
    decisions = Decisions()
    limiter = RateLimiter(
        f"{RATE}/second",
        redis=client,
        prefix=unique_name,
        cooldown=COOLDOWN,
        listeners=decisions.listeners,
    )
    assert getattr(limiter.store, "direct", None) is not None  # the fast path
    dedup = RedisDedupStore(client, prefix=f"{unique_name}:dedup:")
    breakers = RedisBreakerState(
        client, prefix=f"{unique_name}:breaker:", guard=OutageGuard(3, COOLDOWN)
    )
    assert dedup.claim("before", 600) is Claim.ACQUIRED
    dedup.complete("before", 600)
    breakers.publish_open("payments", time.time() + 600)

    started = time.monotonic()
    while decisions.counts["rejected"] == 0:  # use the burst up: Redis refuses
        limiter.acquire("k")
    sentinel.wait_replicated()
    killed = sentinel.kill_master()
    with pytest.raises(BackendUnavailable):
        dedup.claim("during", 600)
    while sentinel.master_port() == killed:
        limiter.acquire("k")
        time.sleep(0.002)
    sentinel.wait_for_promotion(killed)
    gap_ended = decisions.counts["fail-open"]
    # Go on until Redis (the new master) has decided again for a second.
    deadline = None
    while deadline is None or time.monotonic() < deadline:
        before = decisions.counts["fail-open"]
        limiter.acquire("k")
        if deadline is None and decisions.counts["fail-open"] == before:
            deadline = time.monotonic() + 1.0
        time.sleep(0.002)
    elapsed = time.monotonic() - started
    assert gap_ended > 0
    assert_within_the_limit(decisions, elapsed)
    assert raw.exists(f"{unique_name}{{k}}") == 1  # the new master holds the limiter state

    assert retrying(lambda: dedup.claim("before", 600)) is Claim.DONE  # replicated mark
    assert dedup.claim("after", 600) is Claim.ACQUIRED
    dedup.release("after")
    assert dedup.claim("after", 600) is Claim.ACQUIRED
    assert retrying(lambda: breakers.read_open("payments")) is not None
    breakers.clear("payments")
    assert breakers.read_open("payments") is None
    limiter.close()
    close_client(client)


def test_async_cache_and_limiter_carry_on_after_a_failover(
    sentinel: SentinelGroup, raw: Any, unique_name: str
) -> None:
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel

    db = {"price": 1, "stock": 1}
    decisions = Decisions()

    async def scenario() -> None:
        fast = {"socket_timeout": 0.5, "retry": AsyncRetry(NoBackoff(), 0)}
        client = AsyncSentinel(sentinel.sentinels, sentinel_kwargs=fast, **fast).master_for(SERVICE)
        cache = Cache.redis(client, namespace=unique_name, guard=OutageGuard(3, COOLDOWN))
        limiter = RateLimiter(
            f"{RATE}/second",
            redis=client,
            prefix=unique_name,
            cooldown=COOLDOWN,
            listeners=decisions.listeners,
        )

        @cache.cached(ttl=3600, name="item", tags=lambda item: [item])
        async def item(name: str) -> int:
            return db[name]

        assert [await item("price"), await item("stock")] == [1, 1]
        entries = sorted(k for k in raw.keys(f"{unique_name}:*") if b"__" not in k)
        assert len(entries) == 2
        started = time.monotonic()
        while decisions.counts["rejected"] == 0:
            await limiter.aacquire("k")
        await asyncio.to_thread(sentinel.wait_replicated)

        killed = await asyncio.to_thread(sentinel.kill_master)
        db["price"] = db["stock"] = 2
        await item.invalidate("price")
        await cache.ainvalidate_tags("stock")
        assert cache.unsent_invalidations == 2
        promoted = asyncio.ensure_future(asyncio.to_thread(sentinel.wait_for_promotion, killed))
        answers = []
        while not promoted.done():
            await limiter.aacquire("k")
            answers += [await item("price"), await item("stock")]
            await asyncio.sleep(0.002)
        await promoted
        assert set(answers) == {2}  # every call in the gap answered, with the new value
        deadline = None
        while deadline is None or time.monotonic() < deadline:
            before = decisions.counts["fail-open"]
            await limiter.aacquire("k")
            if deadline is None and decisions.counts["fail-open"] == before:
                deadline = time.monotonic() + 1.0
            await asyncio.sleep(0.002)
        elapsed = time.monotonic() - started
        for _ in range(1500):  # the background sender, on this loop
            if cache.unsent_invalidations == 0:
                break
            await asyncio.sleep(0.02)
        assert cache.unsent_invalidations == 0
        assert raw.exists(*entries) == 0
        assert [await item("price"), await item("stock")] == [2, 2]
        assert_within_the_limit(decisions, elapsed)
        await cache.aclose()
        await aclose_client(client)

    asyncio.run(scenario())
