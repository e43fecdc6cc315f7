"""The direct connections the rate limiter and the cache share, on the real Redis: the
same replies and errors as redis-py, a command sent at most once, fork safety and the
pool's connection limit."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from scalepatterns import _direct_redis
from scalepatterns._direct_redis import DirectConnections
from scalepatterns.cache import Cache
from scalepatterns.cache.redis_backend import RedisBackend
from tests.support.servers import RedisServer, TcpProxy, free_port

pytestmark = pytest.mark.redis


@pytest.fixture
def client(redis_url: str, unique_name: str) -> Iterator[redis.Redis]:
    """A client whose connections carry the test's name (CLIENT LIST finds them)."""
    named = redis.Redis.from_url(redis_url, client_name=unique_name, socket_timeout=10)
    yield named
    keys = list(named.scan_iter(f"{unique_name}*", count=1000))
    if keys:
        named.delete(*keys)
    direct = DirectConnections.for_client(named)
    if direct is not None:
        direct.close()
    named.close()


@pytest.fixture
def direct(client: redis.Redis) -> DirectConnections:
    connections = DirectConnections.for_client(client)
    assert connections is not None
    return connections


def named(client: redis.Redis, name: str) -> list[dict[str, Any]]:
    return [c for c in client.client_list() if c.get("name") == name]


def poll(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10.0
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after 10 s: {what}")
        time.sleep(0.01)


def test_get_and_mget_answer_what_redis_py_answers(
    client: redis.Redis, direct: DirectConnections, unique_name: str
) -> None:
    values = {
        "small": b'{"id": 42}',
        "empty": b"",
        "binary": bytes(range(256)) + b"\r\n$-1\r\n",  # reply framing inside a value
        "large": bytes(range(256)) * 20_000,  # 5 MB: read in many pieces
    }
    for name, value in values.items():
        client.set(f"{unique_name}:{name}", value)
    keys = [f"{unique_name}:{name}" for name in [*values, "missing"]]
    for key in keys:
        assert direct.get(key) == client.get(key)
    assert direct.get(f"{unique_name}:missing") is None
    assert direct.call(direct.pack("MGET", *keys)) == client.mget(keys)
    assert direct.call(direct.pack("MGET", *keys))[-1] is None
    assert direct.made == 1  # every reply read whole: the connection stayed usable


def test_error_replies_raise_what_redis_py_raises(
    client: redis.Redis, direct: DirectConnections, unique_name: str
) -> None:
    key = f"{unique_name}:list"
    client.lpush(key, "not a string")
    with pytest.raises(redis.ResponseError) as theirs:
        client.get(key)
    with pytest.raises(redis.ResponseError) as ours:
        direct.get(key)
    assert (type(ours.value), str(ours.value)) == (type(theirs.value), str(theirs.value))
    assert "WRONGTYPE" in str(ours.value)
    with pytest.raises(redis.exceptions.NoScriptError):
        direct.call(direct.pack("EVALSHA", "0" * 40, "0"))
    assert direct.get(key + ":other") is None  # the same connection goes on
    assert (direct.made, direct.open) == (1, 1)


def test_clients_speaking_resp3_or_decoding_replies_get_bytes_too(
    redis_url: str, unique_name: str
) -> None:
    for options in ({"protocol": 3}, {"decode_responses": True}):
        other = redis.Redis.from_url(redis_url, **options)
        try:
            other.set(f"{unique_name}:k", b"v")
            direct = DirectConnections.for_client(other)
            assert direct is not None
            assert direct.get(f"{unique_name}:k") == b"v"  # never decoded
            assert direct.call(direct.pack("MGET", f"{unique_name}:k", "nope")) == [b"v", None]
            direct.close()
        finally:
            other.delete(f"{unique_name}:k")
            other.close()


def test_a_command_whose_reply_is_lost_is_not_sent_again(
    client: redis.Redis, unique_name: str
) -> None:
    counter = f"{unique_name}:counter"
    with TcpProxy(client.connection_pool.connection_kwargs["port"]) as proxy:
        through = redis.Redis(port=proxy.port)
        direct = DirectConnections.for_client(through)
        assert direct is not None
        incr = direct.pack("INCR", counter)
        assert direct.call(incr) == 1
        proxy.lose_next_reply()  # Redis runs it; the answer never arrives
        with pytest.raises(redis.ConnectionError):
            direct.call(incr)
        assert client.get(counter) == b"2"  # ran once, not resent
        assert direct.call(incr) == 3  # on a new connection
        assert (direct.made, direct.open) == (2, 1)
        direct.close()
        through.close()


def test_a_connection_killed_during_a_call_fails_that_call_and_nothing_is_resent(
    client: redis.Redis, direct: DirectConnections, unique_name: str
) -> None:
    queue = f"{unique_name}:queue"
    failed: list[BaseException] = []

    def wait_on_the_list() -> None:
        try:
            direct.call(direct.pack("BLPOP", queue, "8"))
        except redis.ConnectionError as exc:
            failed.append(exc)

    waiter = threading.Thread(target=wait_on_the_list)
    waiter.start()
    poll(lambda: any(c["cmd"] == "blpop" for c in named(client, unique_name)), "BLPOP sent")
    [blocked] = [c for c in named(client, unique_name) if c["cmd"] == "blpop"]
    client.client_kill_filter(_id=blocked["id"])
    waiter.join(10)
    assert len(failed) == 1
    assert direct.open == 0  # dropped, not kept
    client.rpush(queue, "item")
    time.sleep(0.2)  # a resent BLPOP would take the item now
    assert client.llen(queue) == 1


def test_a_connection_killed_between_calls_fails_the_next_one_without_resending(
    client: redis.Redis, direct: DirectConnections, unique_name: str, monkeypatch: Any
) -> None:
    counter = f"{unique_name}:counter"
    incr = direct.pack("INCR", counter)
    assert direct.call(incr) == 1
    client.client_kill_filter(_id=direct.call(direct.pack("CLIENT", "ID")))
    # Used a moment ago, so not checked before the send: the send is lost, and the
    # command is not tried again on another connection.
    with pytest.raises(redis.ConnectionError):
        direct.call(incr)
    assert client.get(counter) == b"1"
    assert direct.call(incr) == 2
    # Checked first when idle: a connection the server closed is replaced before the send.
    killed = direct.call(direct.pack("CLIENT", "ID"))
    client.client_kill_filter(_id=killed)
    monkeypatch.setattr(_direct_redis, "_IDLE_CHECK_AFTER", 0.0)
    assert direct.call(incr) == 3
    assert direct.call(direct.pack("CLIENT", "ID")) != killed  # reconnected in place
    assert (direct.made, direct.open) == (2, 1)


def _get_in_child(direct: DirectConnections, key: str, results: Any, done: Any) -> None:
    results.put((direct.get(key), direct.made))
    done.wait(30)  # stay connected while the parent counts the connections


def test_a_forked_child_makes_its_own_connection(
    client: redis.Redis, direct: DirectConnections, unique_name: str
) -> None:
    key = f"{unique_name}:k"
    client.set(key, b"v")
    assert direct.get(key) == b"v"  # the parent holds an open connection
    before = {c["id"] for c in named(client, unique_name)}
    context = multiprocessing.get_context("fork")
    results, done = context.Queue(), context.Event()
    child = context.Process(target=_get_in_child, args=(direct, key, results, done))
    child.start()
    try:
        assert results.get(timeout=30) == (b"v", 1)  # its own first connection
        now = {c["id"] for c in named(client, unique_name)}
        assert before < now  # one more: the parent's socket was not used
        assert len(now - before) == 1
    finally:
        done.set()
        child.join(30)
    assert direct.get(key) == b"v"  # the parent's connection still works
    assert direct.made == 1


def test_never_more_connections_than_the_pools_max_connections(
    redis_url: str, unique_name: str
) -> None:
    pool = redis.BlockingConnectionPool.from_url(
        redis_url, max_connections=2, timeout=0.3, client_name=unique_name
    )
    limited = redis.Redis(connection_pool=pool)
    direct = DirectConnections.for_client(limited)
    assert direct is not None
    key = f"{unique_name}:k"
    limited.set(key, b"v")
    answers: list[bytes | None] = []
    barrier = threading.Barrier(8)

    def hammer() -> None:
        barrier.wait()
        answers.extend(direct.get(key) for _ in range(50))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [b"v"] * 400  # callers waited for one of the two
    assert direct.made <= 2
    # Both held by blocked calls: a third waits the pool's timeout, then fails.
    queue = f"{unique_name}:queue"
    holders = [
        threading.Thread(target=direct.call, args=(direct.pack("BLPOP", queue, "2"),))
        for _ in range(2)
    ]
    for holder in holders:
        holder.start()
    blocked = lambda: [c for c in named(limited, unique_name) if c["cmd"] == "blpop"]  # noqa: E731
    poll(lambda: len(blocked()) == 2, "both connections in use")
    with pytest.raises(redis.ConnectionError, match="max_connections"):
        direct.get(key)
    for holder in holders:
        holder.join(10)
    assert len([c for c in named(limited, unique_name) if c["cmd"] != "client|list"]) <= 2
    limited.delete(key)
    direct.close()
    limited.close()


def test_cache_hits_on_a_plain_client_go_out_on_the_direct_connections(
    client: redis.Redis, unique_name: str
) -> None:
    cache = Cache(RedisBackend(client), namespace=unique_name, ttl=60)
    loads: list[int] = []

    @cache.cached(name="user")
    def user(user_id: int) -> dict[str, int]:
        loads.append(user_id)
        return {"id": user_id}

    assert user(1) == {"id": 1}  # a miss: loaded, stored through the client
    through_client: list[object] = []
    original = client.execute_command

    def spy(*args: Any, **kwargs: Any) -> Any:
        through_client.append(args[0])
        return original(*args, **kwargs)

    client.execute_command = spy  # type: ignore[method-assign]
    try:
        assert [user(1) for _ in range(20)] == [{"id": 1}] * 20
    finally:
        del client.execute_command
    assert loads == [1]
    assert through_client == []
    assert user.cache_info().hits == 20


def test_a_demoted_primary_is_left_for_a_fresh_connection(
    throwaway_redis: RedisServer, monkeypatch: Any
) -> None:
    server = redis.Redis(port=throwaway_redis.port)
    direct = DirectConnections.for_client(server)
    assert direct is not None
    assert direct.call(direct.pack("SET", "k", "v")) == b"OK"
    server.replicaof("127.0.0.1", free_port())  # now a replica: writes answer READONLY
    with pytest.raises(redis.exceptions.ReadOnlyError):
        direct.call(direct.pack("SET", "k", "w"))
    assert direct.open == 0  # not kept: the next call connects afresh
    # Behind Sentinel the master's pool says so, and redis-py makes READONLY a lost
    # connection (the sentinels name the new master on the next connect).
    monkeypatch.setattr(direct, "_readonly_is_lost", True)
    with pytest.raises(redis.ConnectionError, match="previous master"):
        direct.call(direct.pack("SET", "k", "w"))
    assert direct.open == 0
    assert direct.get("k") == b"v"  # reads go on
    direct.close()
    server.close()
