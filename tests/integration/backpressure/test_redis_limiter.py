"""The Redis rate limiter on the real Redis: same decisions as in-process, exact under many
processes, per-key isolation, and fail open/closed when its Redis dies mid-run."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalepatterns import EventRecorder, FakeClock, Listeners, RateLimiter
from scalepatterns import _direct_redis as direct
from scalepatterns.backpressure import (
    GCRA,
    FixedWindow,
    LimiterBackendFailed,
    Rate,
    SlidingWindow,
)
from scalepatterns.backpressure.stores import RedisStore
from scalepatterns.events import Listeners as _Listeners
from scalepatterns.outage import OutageGuard
from tests.support.servers import TcpProxy

pytestmark = pytest.mark.redis


@pytest.fixture
def client(redis_url: str, unique_name: str):
    conn = redis.Redis.from_url(redis_url)
    yield conn
    for key in conn.scan_iter(f"{unique_name}*", count=1000):
        conn.delete(key)
    conn.close()


traces = st.lists(
    st.tuples(st.floats(min_value=0, max_value=0.7, allow_nan=False), st.integers(1, 4)),
    min_size=1,
    max_size=40,
)
algorithms = st.sampled_from(
    [
        GCRA(Rate(5, 1.0), 3),
        GCRA(Rate(100, 60.0), 7),
        SlidingWindow(Rate(6, 1.0)),
        SlidingWindow(Rate(4, 0.5)),
        FixedWindow(Rate(5, 1.0)),
        FixedWindow(Rate(7, 2.5)),
    ]
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(algorithms, traces, st.floats(min_value=0, max_value=2e9), st.data())
def test_redis_and_in_process_give_the_same_decisions(
    client, unique_name, algorithm, trace, start, data
):
    """The Lua script mirrors the Python core exactly, fed the same explicit times."""
    key = f"t{data.draw(st.integers(0, 2**62))}"
    store = RedisStore(
        client,
        algorithm,
        prefix=unique_name,
        fail_open=False,
        guard=OutageGuard(),
        listeners=_Listeners(),
        name="equivalence",
    )
    now, state = start, None
    for gap, wanted in trace:
        now += gap * algorithm.rate.period
        cost = min(wanted, algorithm.max_cost)
        expected, state = algorithm.decide(state, now, cost)
        assert store.decide(key, cost, now=now) == expected
    client.delete(store.redis_key(key))


def _hammer(url: str, prefix: str, key: str, barrier, results, seconds: float) -> None:
    conn = redis.Redis.from_url(url)
    limiter = RateLimiter("50/second", burst=10, redis=conn, prefix=prefix, fail_open=False)
    barrier.wait()  # every process is up (spawning 8 interpreters takes a while)
    allowed = refused = 0
    first = time.time()
    while time.time() < first + seconds:
        if limiter.acquire(key).allowed:
            allowed += 1
        else:
            refused += 1
    results.put((allowed, refused, first, time.time(), limiter.store.backend_errors))
    conn.close()


@pytest.mark.slow
def test_eight_processes_hammering_one_key_never_exceed_the_limit(redis_url, client, unique_name):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(8)
    results = context.Queue()
    processes = [
        context.Process(
            target=_hammer, args=(redis_url, unique_name, "shared", barrier, results, 3.0)
        )
        for _ in range(8)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
    allowed = sum(r[0] for r in outcomes)
    refused = sum(r[1] for r in outcomes)
    span = max(r[3] for r in outcomes) - min(r[2] for r in outcomes)
    assert sum(r[4] for r in outcomes) == 0  # every decision came from Redis
    assert allowed <= 50 * span + 10  # rate x window + burst, over all 8 processes
    assert allowed >= 50 * span * 0.5  # and it did let the rate through
    assert refused > allowed  # the processes really did hammer it


def test_per_key_isolation(client, unique_name):
    limiter = RateLimiter("3/minute", redis=client, prefix=unique_name)
    assert [limiter.acquire("alice").allowed for _ in range(4)] == [True, True, True, False]
    assert [limiter.acquire("bob").allowed for _ in range(4)] == [True, True, True, False]
    refused = limiter.acquire("alice")
    assert 19 < refused.retry_after <= 20.001
    keys = sorted(k.decode() for k in client.scan_iter(f"{unique_name}*"))
    assert keys == [f"{unique_name}{{alice}}", f"{unique_name}{{bob}}"]
    assert 0 < client.pttl(keys[0]) <= 60_000  # state expires with the bucket


@pytest.mark.parametrize("algorithm", ["gcra", "sliding-window", "fixed-window"])
def test_async_client_decides_like_the_sync_one(redis_url, client, unique_name, algorithm):
    import redis.asyncio as aioredis

    async def main() -> list[bool]:
        conn = aioredis.Redis.from_url(redis_url)
        limiter = RateLimiter("4/minute", algorithm=algorithm, redis=conn, prefix=unique_name)
        try:
            return [(await limiter.aacquire("k")).allowed for _ in range(5)]
        finally:
            await conn.aclose()

    sync = RateLimiter("4/minute", algorithm=algorithm, redis=client, prefix=unique_name + "s")
    assert asyncio.run(main()) == [sync.acquire("k").allowed for _ in range(5)]
    assert sync.acquire("k").allowed is False


@pytest.mark.parametrize("fail_open", [True, False])
def test_redis_killed_mid_run_fails_as_configured_then_recovers(throwaway_redis, fail_open):
    clock = FakeClock()
    listeners = Listeners()
    recorder = EventRecorder()
    listeners.add(recorder, LimiterBackendFailed)
    conn = redis.Redis.from_url(throwaway_redis.url, socket_timeout=1, socket_connect_timeout=1)
    limiter = RateLimiter(
        "100/minute",
        burst=5,
        redis=conn,
        fail_open=fail_open,
        failure_threshold=2,
        cooldown=5.0,
        clock=clock,
        listeners=listeners,
    )
    assert [limiter.acquire("k").allowed for _ in range(6)] == [True] * 5 + [False]

    throwaway_redis.kill()
    during = [limiter.acquire("k") for _ in range(500)]
    assert all(d.allowed is fail_open for d in during)
    assert limiter.store.backend_errors == 2  # two real attempts; 498 skipped without I/O
    assert limiter.store.fallback_decisions == 500
    assert len(recorder.events) == 500
    assert sum(e.error == "skipped" for e in recorder.events) == 498

    throwaway_redis.start()  # same port, empty data set
    clock.advance(5.0)
    back = limiter.acquire("k")
    assert back.allowed
    assert back.remaining == 4
    assert not limiter.store.guard.is_open
    conn.close()


def test_async_client_redis_killed_mid_run_then_back(throwaway_redis):
    import redis.asyncio as aioredis

    clock = FakeClock()

    async def main() -> None:
        conn = aioredis.Redis.from_url(throwaway_redis.url, socket_timeout=1)
        limiter = RateLimiter(
            "100/minute", burst=5, redis=conn, fail_open=False, failure_threshold=2, clock=clock
        )
        try:
            assert [(await limiter.aacquire("k")).allowed for _ in range(6)] == [True] * 5 + [False]
            throwaway_redis.kill()
            during = [await limiter.aacquire("k") for _ in range(100)]
            assert not any(d.allowed for d in during)
            assert limiter.store.backend_errors == 2
            throwaway_redis.start()  # empty: the script is reloaded after NOSCRIPT
            clock.advance(5.0)
            back = await limiter.aacquire("k")
            assert back.allowed
            assert back.remaining == 4
        finally:
            await conn.aclose()

    asyncio.run(main())


def test_a_client_that_decodes_responses_works_too(redis_url, client, unique_name):
    decoding = redis.Redis.from_url(redis_url, decode_responses=True)
    limiter = RateLimiter("2/minute", redis=decoding, prefix=unique_name)
    try:
        decisions = [limiter.acquire("k") for _ in range(3)]
        assert [d.allowed for d in decisions] == [True, True, False]
        assert decisions[1].remaining == 0
        assert 29 < decisions[2].retry_after <= 30.001
        assert limiter.acquire("other", cost=2).allowed
    finally:
        decoding.close()


def test_a_script_error_is_backend_unavailable_not_a_silent_fallback(client, unique_name):
    from scalepatterns import BackendUnavailable

    limiter = RateLimiter("5/second", redis=client, prefix=unique_name)
    client.lpush(limiter.store.redis_key("k"), "not a rate-limit state")  # WRONGTYPE for GET
    with pytest.raises(BackendUnavailable) as info:
        limiter.acquire("k")
    assert "WRONGTYPE" in str(info.value)
    assert isinstance(info.value.__cause__, redis.exceptions.ResponseError)
    assert limiter.store.fallback_decisions == 0
    assert not limiter.store.guard.is_open


def _named_connections(client: redis.Redis, name: str) -> list[dict[str, object]]:
    return [c for c in client.client_list() if c.get("name") == name]


def _named_connections_left(client: redis.Redis, name: str) -> list[dict[str, object]]:
    """The connections named `name` once the server has seen ours close: it learns of a
    closed socket on its next turn of the event loop, maybe after our CLIENT LIST."""
    deadline = time.monotonic() + 5.0
    while (left := _named_connections(client, name)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return left


def test_decisions_run_on_the_limiters_own_connections(redis_url, client, unique_name):
    named = redis.Redis.from_url(redis_url, client_name=unique_name)  # tags every connection
    limiter = RateLimiter("40/hour", redis=named, prefix=unique_name)  # no refill mid-test
    assert limiter.store.direct is not None
    allowed: list[bool] = []

    def hammer() -> None:
        allowed.extend(limiter.acquire("shared").allowed for _ in range(20))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 40  # exact: the burst, no more, across 4 threads
    made = limiter.store.direct.made
    assert 1 <= made <= 4  # at most one connection per thread deciding at once
    assert len(_named_connections(client, unique_name)) == made  # the pool made none
    limiter.close()
    assert _named_connections_left(client, unique_name) == []
    assert not limiter.acquire("shared").allowed  # a later decision reconnects
    limiter.close()
    named.close()


def test_an_idle_connection_the_server_dropped_is_replaced_without_an_error(
    redis_url, client, unique_name, monkeypatch
):
    monkeypatch.setattr(direct, "_IDLE_CHECK_AFTER", 0.0)  # every reuse counts as idle
    named = redis.Redis.from_url(redis_url, client_name=unique_name)
    limiter = RateLimiter("5/hour", redis=named, prefix=unique_name)
    assert limiter.acquire("k").remaining == 4
    [dropped] = [c["id"] for c in _named_connections(client, unique_name)]
    client.client_kill_filter(_id=dropped)
    assert limiter.acquire("k").remaining == 3  # counted once, on a new connection
    assert limiter.store.backend_errors == 0
    assert [c["id"] for c in _named_connections(client, unique_name)] != [dropped]
    assert len(_named_connections(client, unique_name)) == 1
    limiter.close()
    named.close()


def test_a_decision_whose_reply_is_lost_is_not_sent_twice(client, unique_name):
    with TcpProxy(client.connection_pool.connection_kwargs["port"]) as proxy:
        through = redis.Redis(port=proxy.port)
        limiter = RateLimiter("5/hour", redis=through, prefix=unique_name)
        assert limiter.acquire("k").remaining == 4
        proxy.lose_next_reply()  # Redis runs the script; the answer never arrives
        lost = limiter.acquire("k")
        assert lost.allowed  # fail open: the caller is not blocked by our failure
        assert limiter.store.backend_errors == 1
        assert limiter.acquire("k").remaining == 2  # 3 spent: the lost one counted once
        limiter.close()
        through.close()


def test_limiters_of_one_client_share_at_most_max_connections(redis_url, client, unique_name):
    pool = redis.BlockingConnectionPool.from_url(
        redis_url, max_connections=2, client_name=unique_name
    )
    shared = redis.Redis(connection_pool=pool)
    limiters = [
        RateLimiter("1000/minute", burst=1000, redis=shared, prefix=f"{unique_name}:{i}")
        for i in range(3)
    ]
    assert len({id(limiter.store.direct) for limiter in limiters}) == 1
    barrier = threading.Barrier(10)
    allowed: list[bool] = []

    def hammer() -> None:
        barrier.wait()
        for limiter in limiters:
            allowed.extend(limiter.acquire("k").allowed for _ in range(10))

    threads = [threading.Thread(target=hammer) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 300  # callers waited for one of the two connections
    assert limiters[0].store.direct.made == 2
    assert len(_named_connections(client, unique_name)) == 2  # and the pool opened none
    assert limiters[0].store.backend_errors == 0
    limiters[0].close()  # closes what the three share
    assert limiters[0].store.direct.open == 0
    assert _named_connections_left(client, unique_name) == []
    shared.close()


def test_connections_close_when_their_client_is_collected(redis_url, client, unique_name):
    import gc

    for _ in range(3):
        named = redis.Redis.from_url(redis_url, client_name=unique_name)
        limiter = RateLimiter("5/hour", redis=named, prefix=unique_name)
        assert limiter.acquire("k").allowed
        del limiter, named  # never closed: dropped, as a short-lived client often is
        gc.collect()
    assert _named_connections_left(client, unique_name) == []


def test_close_during_a_call_drops_that_connection_when_the_call_ends(
    redis_url, client, unique_name, monkeypatch
):
    named = redis.Redis.from_url(redis_url, client_name=unique_name)
    limiter = RateLimiter("100/minute", redis=named, prefix=unique_name)
    connections = limiter.store.direct
    assert limiter.acquire("k").allowed
    real_check = direct._drop_if_closed

    def close_then_check(connection: object) -> None:
        limiter.close()  # another thread closing while this call is in flight
        real_check(connection)

    monkeypatch.setattr(direct, "_IDLE_CHECK_AFTER", 0.0)  # the check runs mid-call
    monkeypatch.setattr(direct, "_drop_if_closed", close_then_check)
    assert limiter.acquire("k").allowed
    assert connections.open == 0
    assert _named_connections_left(client, unique_name) == []
    named.close()


def _decide_in_child(limiter: RateLimiter, results: multiprocessing.Queue, done) -> None:
    decision = limiter.acquire("k")
    results.put((decision.allowed, decision.remaining, limiter.store.direct.made))
    done.wait(30)  # stay connected while the parent counts the connections


def test_a_forked_child_makes_its_own_connections(redis_url, client, unique_name):
    named = redis.Redis.from_url(redis_url, client_name=unique_name)
    limiter = RateLimiter("5/hour", redis=named, prefix=unique_name)
    assert limiter.acquire("k").remaining == 4  # the parent holds an open connection
    context = multiprocessing.get_context("fork")
    results, done = context.Queue(), context.Event()
    child = context.Process(target=_decide_in_child, args=(limiter, results, done))
    child.start()
    try:
        allowed, remaining, made = results.get(timeout=30)
        assert (allowed, remaining, made) == (True, 3, 1)  # its own first connection
        assert len(_named_connections(client, unique_name)) == 2  # not the parent's socket
    finally:
        done.set()
        child.join(30)
    assert limiter.acquire("k").remaining == 2  # the parent's connection still works
    assert limiter.store.direct.made == 1
    limiter.close()
    named.close()
