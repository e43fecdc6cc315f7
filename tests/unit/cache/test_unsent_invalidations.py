"""Invalidations made while Redis is unreachable are kept and sent when it answers.

Redis is fakeredis here, switched off with ``server.connected = False``; the failover on
real servers is in tests/integration/test_redis_sentinel.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest

from scalepatterns.cache import Cache
from scalepatterns.cache.redis_backend import AsyncRedisBackend, RedisBackend
from scalepatterns.cache.unsent import Batch, Unsent
from scalepatterns.outage import OutageGuard


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not true in time"
        time.sleep(0.01)


def entry_keys(client: Any, namespace: str) -> set[bytes]:
    return {k for k in client.keys(f"{namespace}*") if b"__" not in k}


def test_unsent_collapses_into_a_namespace_bump_past_its_limit() -> None:
    unsent = Unsent(limit=3)
    unsent.add(keys=["a", "b"], tags=["t"])
    assert len(unsent) == 3
    unsent.add(keys=["c"])  # four: more than it keeps one by one
    batch = unsent.take()
    assert batch == Batch(bump=True)  # drops everything: more than asked, never less
    unsent.done()
    assert len(unsent) == 0


def test_a_batch_given_back_keeps_the_keys_found_on_the_way() -> None:
    unsent = Unsent()
    unsent.add(tags=["t"])
    batch = unsent.take()
    assert len(unsent) == 1  # being sent still counts
    batch.keys.add("k")  # the tag set was popped, then the delete failed
    batch.tags.clear()
    unsent.add(keys=["other"])
    unsent.give_back(batch)
    assert unsent.take() == Batch(keys={"k", "other"})


def test_invalidations_made_while_redis_is_down_are_sent_when_it_answers() -> None:
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeRedis(server=server)
    cache = Cache(
        RedisBackend(fakeredis.FakeRedis(server=server)),
        namespace="unsent",
        guard=OutageGuard(3, 0.05),
    )
    state = {"a": 1, "b": 1, "c": 1}

    @cache.cached(ttl=3600, tags=lambda name: [f"tag-{name}"])
    def read(name: str) -> int:
        return state[name]

    assert [read("a"), read("b"), read("c")] == [1, 1, 1]
    assert len(entry_keys(redis, "unsent")) == 3
    server.connected = False
    state.update(a=2, b=2)
    read.invalidate("a")
    assert cache.invalidate_tags("tag-b") == 0  # nothing deleted yet...
    assert cache.unsent_invalidations == 2  # ...but kept
    assert read("a") == 2  # Redis away: the function answers
    server.connected = True
    wait_until(lambda: cache.unsent_invalidations == 0)  # the background sender
    assert len(entry_keys(redis, "unsent")) == 1  # only "c" is left
    other = Cache(RedisBackend(redis), namespace="unsent")

    @other.cached(ttl=3600, name=read.__wrapped__.__qualname__)  # type: ignore[attr-defined]
    def read_elsewhere(name: str) -> int:
        return state[name]

    assert [read_elsewhere("a"), read_elsewhere("b")] == [2, 2]  # another process too
    cache.close()


def test_this_process_sends_them_before_it_reads_redis_again() -> None:
    """No background sender in time: the next read sends them first."""
    server = fakeredis.FakeServer()
    cache = Cache(
        RedisBackend(fakeredis.FakeRedis(server=server)),
        namespace="first",
        guard=OutageGuard(1, 3600),  # open for an hour after one failure...
    )
    state = {"v": 1}

    @cache.cached(ttl=3600)
    def read(key: str) -> int:
        return state["v"]

    assert read("k") == 1
    server.connected = False
    state["v"] = 2
    read.invalidate("k")
    assert cache.guard.is_open
    server.connected = True
    cache.guard.record_success()  # ...until this process's next call closes it
    commands: list[str] = []
    client = cache.backend.client
    original = client.execute_command

    def spy(*args: Any, **kwargs: Any) -> Any:
        commands.append(str(args[0]))
        return original(*args, **kwargs)

    client.execute_command = spy
    assert read("k") == 2
    assert commands.index("DEL") < commands.index("GET")
    cache.close()


def test_a_failure_between_popping_a_tag_and_deleting_its_keys_loses_nothing() -> None:
    server = fakeredis.FakeServer()
    backend = RedisBackend(fakeredis.FakeRedis(server=server))
    cache = Cache(backend, namespace="half", guard=OutageGuard(3, 0.05))

    @cache.cached(ttl=3600, tags=lambda n: ["all"])
    def read(n: int) -> int:
        return n

    assert [read(1), read(2)] == [1, 2]
    pop_tagged = backend.pop_tagged

    def pop_then_die(tags: Any) -> list[str]:
        keys = pop_tagged(tags)
        server.connected = False  # the tag set is gone, its keys are not deleted yet
        return keys

    backend.pop_tagged = pop_then_die  # type: ignore[method-assign]
    assert cache.invalidate_tags("all") == 0
    assert cache.unsent_invalidations == 2  # the two keys the tag named
    backend.pop_tagged = pop_tagged  # type: ignore[method-assign]
    server.connected = True
    wait_until(lambda: cache.unsent_invalidations == 0)
    assert entry_keys(backend.client, "half") == set()
    cache.close()


def test_a_namespace_bump_collapsed_from_too_many_keys_reaches_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = fakeredis.FakeServer()
    cache = Cache(RedisBackend(fakeredis.FakeRedis(server=server)), namespace="many", ttl=3600)
    monkeypatch.setattr(cache._namespace.unsent, "limit", 2)  # internal: a small bound

    @cache.cached()
    def read(n: int) -> int:
        return n

    assert [read(n) for n in range(3)] == [0, 1, 2]
    server.connected = False
    for n in range(3):
        read.invalidate(n)
    server.connected = True
    cache.guard.record_success()
    wait_until(lambda: cache.unsent_invalidations == 0)
    # Every process moves past the old entries.
    assert fakeredis.FakeRedis(server=server).get("many:__version__") == b"1"
    cache.close()


def test_an_asyncio_cache_sends_them_from_a_task_on_its_loop() -> None:
    server = fakeredis.FakeServer()
    sync_view = fakeredis.FakeRedis(server=server)

    async def scenario() -> None:
        cache = Cache(
            AsyncRedisBackend(fakeredis.FakeAsyncRedis(server=server)),
            namespace="aunsent",
            guard=OutageGuard(3, 0.05),
        )
        state = {"a": 1, "b": 1}

        @cache.cached(ttl=3600, tags=lambda name: [name])
        async def read(name: str) -> int:
            return state[name]

        assert [await read("a"), await read("b")] == [1, 1]
        server.connected = False
        state.update(a=2, b=2)
        await read.invalidate("a")
        assert await cache.ainvalidate_tags("b") == 0
        assert cache.unsent_invalidations == 2
        server.connected = True
        for _ in range(500):
            if cache.unsent_invalidations == 0:
                break
            await asyncio.sleep(0.01)
        assert cache.unsent_invalidations == 0
        assert entry_keys(sync_view, "aunsent") == set()
        assert [await read("a"), await read("b")] == [2, 2]
        await cache.aclose()

    asyncio.run(scenario())
