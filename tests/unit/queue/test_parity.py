"""Every sync class of the queue block and its async twin offer the same methods, with
the same parameters; the async ones are coroutines (they cannot drift apart unseen)."""

from __future__ import annotations

import inspect

import pytest

from scalepatterns.queue import (
    AsyncBroker,
    AsyncDeadLetters,
    AsyncEventBus,
    AsyncMemoryBroker,
    AsyncProducer,
    AsyncRabbitMQBroker,
    AsyncRedisStreamsBroker,
    AsyncTask,
    AsyncWorker,
    Broker,
    DeadLetters,
    EventBus,
    MemoryBroker,
    Producer,
    RabbitMQBroker,
    RedisStreamsBroker,
    Task,
    Worker,
)

# Methods one side has and the other does not, and why.
ONLY_SYNC = {
    MemoryBroker: {"queues", "unacked"},  # test helpers; reach them as AsyncMemoryBroker.sync
}
SYNC_ON_BOTH = {"queue_of", "workers", "in_flight", "connections"}  # no I/O: plain on both

PAIRS = [
    (Broker, AsyncBroker),
    (Producer, AsyncProducer),
    (Worker, AsyncWorker),
    (EventBus, AsyncEventBus),
    (DeadLetters, AsyncDeadLetters),
    (MemoryBroker, AsyncMemoryBroker),
    (RabbitMQBroker, AsyncRabbitMQBroker),
    (Task, AsyncTask),
    (RedisStreamsBroker, AsyncRedisStreamsBroker),
]


def public_methods(cls: type) -> dict[str, object]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and (callable(member) or isinstance(member, property))
    }


@pytest.mark.parametrize(("sync", "async_"), PAIRS, ids=lambda cls: cls.__name__)
def test_the_async_twin_has_the_same_methods_and_parameters(sync: type, async_: type) -> None:
    ours, theirs = public_methods(sync), public_methods(async_)
    assert set(ours) - ONLY_SYNC.get(sync, set()) == set(theirs)
    for name, method in theirs.items():
        if isinstance(method, property):
            continue
        assert inspect.signature(ours[name]).parameters.keys() == (
            inspect.signature(method).parameters.keys()
        ), name
        for parameter in inspect.signature(method).parameters.values():
            twin = inspect.signature(ours[name]).parameters[parameter.name]
            assert (twin.kind, twin.default) == (parameter.kind, parameter.default), (
                f"{async_.__name__}.{name}({parameter.name})"
            )
        expect_coroutine = name not in SYNC_ON_BOTH
        assert inspect.iscoroutinefunction(method) is expect_coroutine, name
        assert not inspect.iscoroutinefunction(ours[name]), name


@pytest.mark.parametrize(
    ("sync", "async_"),
    [
        (Worker, AsyncWorker),
        (EventBus, AsyncEventBus),
        (MemoryBroker, AsyncMemoryBroker),
        (RedisStreamsBroker, AsyncRedisStreamsBroker),
    ],
    ids=lambda cls: cls.__name__,
)
def test_context_managers_match(sync: type, async_: type) -> None:
    assert hasattr(sync, "__enter__") == hasattr(async_, "__aenter__")


def test_constructors_take_the_same_options() -> None:
    for sync, async_ in PAIRS[1:5] + PAIRS[6:7] + PAIRS[8:]:
        ours = inspect.signature(sync).parameters
        theirs = inspect.signature(async_).parameters
        assert [p for p in ours if p != "broker"] == [p for p in theirs if p != "broker"], sync
