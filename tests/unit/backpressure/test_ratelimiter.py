"""RateLimiter in-process: the same scenarios through sync, async and the decorator."""

from __future__ import annotations

import asyncio
import functools
import threading
import types

import pytest
import redis

from scalepatterns import EventRecorder, FakeClock, Listeners, RateLimited, RateLimiter
from scalepatterns._direct_redis import DirectConnections
from scalepatterns.backpressure import (
    LimiterBackendFailed,
    RateAllowed,
    RateRejected,
    RateWaited,
)
from tests.support.servers import free_port

ALGORITHMS = ["gcra", "sliding-window", "fixed-window"]


@pytest.fixture(params=["sync", "async"])
def acquire(request):
    """`acquire` as the test sees it: straight, or through `aacquire` in an event loop."""

    def make(limiter: RateLimiter):
        if request.param == "sync":
            return limiter.acquire
        return lambda key, cost=1: asyncio.run(limiter.aacquire(key, cost))

    return make


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_limit_per_key_then_refill(acquire, algorithm: str) -> None:
    clock = FakeClock(start=10.0)
    limiter = RateLimiter("5/second", algorithm=algorithm, clock=clock)
    go = acquire(limiter)
    assert [go("a").allowed for _ in range(6)] == [True] * 5 + [False]
    assert go("b").allowed  # another key is untouched
    refused = go("a")
    assert refused.retry_after > 0
    clock.advance(refused.retry_after + 1e-6)
    assert go("a").allowed


def test_events_allow_reject_wait() -> None:
    clock = FakeClock()
    listeners = Listeners()
    recorder = EventRecorder()
    listeners.add(recorder)
    limiter = RateLimiter("1/second", clock=clock, listeners=listeners, name="api")
    limiter.acquire("u")
    limiter.acquire("u")
    limiter.acquire_or_wait("u")
    assert [type(e) for e in recorder.events] == [
        RateAllowed,
        RateRejected,
        RateRejected,
        RateAllowed,
        RateWaited,
    ]
    assert {e.source for e in recorder.events} == {"api"}
    assert recorder.of_type(RateWaited)[0].waited == pytest.approx(1.0)
    assert recorder.of_type(RateRejected)[0].backend == "memory"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_acquire_or_wait_sleeps_on_the_clock_and_respects_timeout(mode: str) -> None:
    clock = FakeClock()
    limiter = RateLimiter("2/second", burst=1, clock=clock)

    def call(**kwargs):
        if mode == "sync":
            return limiter.acquire_or_wait("k", **kwargs)
        return asyncio.run(limiter.aacquire_or_wait("k", **kwargs))

    call()
    assert clock.monotonic() == 0.0
    call()
    assert clock.monotonic() == pytest.approx(0.5)
    with pytest.raises(RateLimited) as info:
        call(timeout=0.1)
    assert info.value.key == "k"
    assert info.value.retry_after == pytest.approx(0.5)
    assert clock.monotonic() == pytest.approx(0.5)  # refused at once, no pointless sleep


def test_decorator_sync_and_async_with_key_function() -> None:
    clock = FakeClock()
    limiter = RateLimiter("2/minute", clock=clock)

    @limiter.limit(key=lambda user, **_: f"user:{user}")
    def fetch(user: str, page: int = 1) -> str:
        return f"{user}:{page}"

    @limiter.limit(key=lambda user, **_: f"user:{user}")
    async def afetch(user: str, page: int = 1) -> str:
        return f"{user}:{page}"

    assert fetch("ada") == "ada:1"
    assert asyncio.run(afetch("ada", page=2)) == "ada:2"
    with pytest.raises(RateLimited) as info:
        fetch("ada")
    assert info.value.retry_after == pytest.approx(30.0)
    with pytest.raises(RateLimited):
        asyncio.run(afetch("ada"))
    assert fetch("bob") == "bob:1"
    assert fetch.__name__ == "fetch"


def test_decorator_detects_partials_and_async_callables() -> None:
    limiter = RateLimiter("1/hour", clock=FakeClock())

    async def base(x: int) -> int:
        return x

    class Handler:
        async def __call__(self, x: int) -> int:
            return x * 2

    wrapped_partial = limiter.limit(key="p")(functools.partial(base, 3))
    wrapped_object = limiter.limit(key="o")(Handler())
    assert asyncio.run(wrapped_partial()) == 3
    assert asyncio.run(wrapped_object(4)) == 8


def test_decorator_that_waits() -> None:
    clock = FakeClock()
    limiter = RateLimiter("1/second", clock=clock)
    calls = []

    @limiter.limit(key="job", wait=True)
    def job() -> None:
        calls.append(clock.monotonic())

    for _ in range(3):
        job()
    assert calls == [0.0, 1.0, 2.0]


def test_idle_keys_are_forgotten() -> None:
    clock = FakeClock()
    limiter = RateLimiter("10/second", clock=clock)
    for i in range(5000):
        limiter.acquire(f"k{i}")
    clock.advance(1.0)
    for _ in range(12_000):
        limiter.acquire("hot")
        clock.advance(0.1)
    assert len(limiter.store) < 10


class _DeadRedis:
    """A client whose every script call fails as a dead server does."""

    def __init__(self) -> None:
        self.calls = 0

    def register_script(self, source: str) -> object:
        return types.SimpleNamespace(sha="0" * 40)

    def evalsha(self, *args: object) -> None:
        self.calls += 1
        raise redis.exceptions.ConnectionError("Connection refused")


@pytest.mark.parametrize("fail_open", [True, False])
def test_redis_down_fails_open_or_closed_and_stops_calling(fail_open: bool) -> None:
    client = _DeadRedis()
    listeners = Listeners()
    recorder = EventRecorder()
    listeners.add(recorder, LimiterBackendFailed)
    limiter = RateLimiter(
        "5/second", redis=client, fail_open=fail_open, failure_threshold=2, listeners=listeners
    )
    decisions = [limiter.acquire("k") for _ in range(50)]
    assert all(d.allowed is fail_open for d in decisions)
    assert client.calls == 2  # then the outage guard skips Redis for its cool-down
    assert limiter.store.backend_errors == 2
    assert limiter.store.fallback_decisions == 50
    errors = [e.error for e in recorder.events]
    assert errors[:2] == ["ConnectionError", "ConnectionError"]
    assert set(errors[2:]) == {"skipped"}
    if not fail_open:
        assert decisions[-1].retry_after > 0


def test_only_a_plain_redis_client_decides_on_direct_connections() -> None:
    import fakeredis

    blocking = redis.BlockingConnectionPool(port=free_port())
    assert DirectConnections.for_client(redis.Redis(port=free_port())) is not None
    assert DirectConnections.for_client(redis.Redis(connection_pool=blocking)) is not None
    assert DirectConnections.for_client(fakeredis.FakeRedis()) is None  # its own connections
    assert RateLimiter("2/second", redis=fakeredis.FakeRedis()).store.direct is None


@pytest.mark.parametrize("fail_open", [True, False])
def test_a_dead_redis_on_direct_connections_fails_as_configured(fail_open: bool) -> None:
    client = redis.Redis(port=free_port())  # nothing listens there: connection refused
    limiter = RateLimiter("5/second", redis=client, fail_open=fail_open, failure_threshold=2)
    assert limiter.store.direct is not None
    decisions = [limiter.acquire("k") for _ in range(20)]
    assert all(d.allowed is fail_open for d in decisions)
    assert limiter.store.backend_errors == 2  # then the guard skips Redis
    assert limiter.store.fallback_decisions == 20


def test_async_redis_client_needs_aacquire() -> None:
    import fakeredis

    limiter = RateLimiter("5/second", redis=fakeredis.FakeAsyncRedis())
    with pytest.raises(TypeError, match="aacquire"):
        limiter.acquire("k")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_exact_under_threads(algorithm: str) -> None:
    """Eight threads racing on one key with the clock stopped: exactly the burst passes."""
    limiter = RateLimiter("50/second", algorithm=algorithm, clock=FakeClock())
    allowed = [0] * 8
    barrier = threading.Barrier(8)

    def hammer(index: int) -> None:
        barrier.wait()
        for _ in range(500):
            allowed[index] += limiter.acquire("shared").allowed

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 50


class _DeadAsyncRedis:
    def __init__(self) -> None:
        self.calls = 0

    def register_script(self, source: str) -> object:
        return types.SimpleNamespace(sha="0" * 40)

    async def execute_command(self, *args: object) -> None:
        raise AssertionError("not used")

    async def evalsha(self, *args: object) -> None:
        self.calls += 1
        raise redis.exceptions.TimeoutError("Timeout reading from socket")


@pytest.mark.parametrize("fail_open", [True, False])
def test_async_redis_down_fails_as_configured(fail_open: bool) -> None:
    client = _DeadAsyncRedis()
    limiter = RateLimiter("5/second", redis=client, fail_open=fail_open, failure_threshold=3)

    async def main() -> list[bool]:
        return [(await limiter.aacquire("k")).allowed for _ in range(20)]

    assert asyncio.run(main()) == [fail_open] * 20
    assert client.calls == 3
    assert limiter.store.fallback_decisions == 20


class _HangingAsyncRedis(_DeadAsyncRedis):
    """Dead at first; then its script calls hang (a slow server) until cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.hang = False

    async def evalsha(self, *args: object) -> None:
        if self.hang:
            self.calls += 1
            await asyncio.Event().wait()
        await super().evalsha(*args)


def test_a_cancelled_probe_lets_the_next_probe_through() -> None:
    """A probe cancelled by the caller (a request timeout) must not leave the outage guard
    waiting forever for its verdict: after the next cool-down another probe goes to Redis."""
    client = _HangingAsyncRedis()
    clock = FakeClock()
    limiter = RateLimiter("5/second", redis=client, failure_threshold=1, cooldown=5, clock=clock)

    async def main() -> None:
        await limiter.aacquire("k")  # the failure that opens the guard
        clock.advance(5)
        client.hang = True
        probe = asyncio.ensure_future(limiter.aacquire("k"))
        await asyncio.sleep(0)
        assert client.calls == 2  # the probe is out
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        clock.advance(5)
        later = asyncio.ensure_future(limiter.aacquire("k"))
        await asyncio.sleep(0)
        assert client.calls == 3  # a new probe reached Redis
        later.cancel()
        with pytest.raises(asyncio.CancelledError):
            await later

    asyncio.run(main())
