"""Type checks of the queue block's public API (run by `mypy --strict tests/typing`)."""

from __future__ import annotations

from typing_extensions import assert_type

from scalepatterns.queue import MemoryBroker, Message, Producer, Task, Worker, task

broker = MemoryBroker()


@task(broker, queue="typing")
def add(x: int, y: int = 1) -> int:
    return x + y


_as_task: Task[[int, int], int] = add  # keeps the signature: (x, y=1) -> int
assert_type(add(1, y=2), int)
assert_type(add.delay(1, y=2), str)
assert_type(add.apply_async([1], {"y": 2}, delay=1.0), str)
assert_type(Producer(broker).publish("q", {"a": 1}), str)
assert_type(Producer(broker).publish_many("q", [1, 2]), list[str])


def handler(message: Message) -> None:
    assert_type(message.attempt, int)


assert_type(Worker(broker, "q", handler).start(), Worker)
