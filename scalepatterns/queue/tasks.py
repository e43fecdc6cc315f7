"""`@task`: turn a function into something you can `.delay()` onto a queue."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from typing_extensions import ParamSpec

from scalepatterns._coroutines import run_awaitable
from scalepatterns.errors import ConfigurationError
from scalepatterns.queue.broker import Broker
from scalepatterns.queue.errors import Reject
from scalepatterns.queue.message import Message
from scalepatterns.queue.producer import Producer
from scalepatterns.queue.worker import Worker

__all__ = ["Task", "TaskRegistry", "default_registry", "task", "task_worker"]

P = ParamSpec("P")
R = TypeVar("R")


class TaskRegistry:
    """Task name -> task; a worker looks tasks up here by the message's type."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, Task[Any, Any]] = {}

    def register(self, task: Task[Any, Any]) -> None:
        with self._lock:
            existing = self._tasks.get(task.name)
            if existing is not None and existing.fn is not task.fn:
                raise ConfigurationError(
                    "name", task.name, "a task name not already used by another function"
                )
            self._tasks[task.name] = task

    def get(self, name: str) -> Task[Any, Any] | None:
        return self._tasks.get(name)

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def __call__(self, message: Message) -> Any:
        """The handler: run the task named by the message's type with its arguments."""
        task = self._tasks.get(message.type or "")
        if task is None:
            raise Reject(f"no task named {message.type!r} is registered in this worker")
        body = message.body
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("args", []), list)
            or not isinstance(body.get("kwargs", {}), dict)
            or not all(isinstance(name, str) for name in body.get("kwargs", {}))
        ):
            raise Reject("a task message body must be {'args': [...], 'kwargs': {...}}")
        args, kwargs = body.get("args", []), body.get("kwargs", {})
        if task.signature is not None:
            try:  # arguments that can never fit: no retry can help
                task.signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise Reject(f"task {task.name!r} cannot take these arguments: {exc}") from exc
        result = task.fn(*args, **kwargs)
        if inspect.isawaitable(result):
            return run_awaitable(result)
        return result


default_registry = TaskRegistry()
"""Where `@task` registers unless given another registry."""


class Task(Generic[P, R]):
    """A function that can also be sent to a queue; calling it runs it here and now."""

    def __init__(
        self,
        fn: Callable[P, R],
        producer: Producer,
        queue: str,
        name: str,
    ) -> None:
        self.fn = fn
        self.producer = producer
        self.queue = queue
        self.name = name
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        self.__wrapped__ = fn
        try:
            self.signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # some builtins have none: arguments go unchecked
            self.signature = None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Queue a call with these arguments; returns the message id once confirmed."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        delay: float | None = None,
        priority: int | None = None,
        message_id: str | None = None,
    ) -> str:
        """Queue a call; `delay` seconds later; returns the message id once confirmed."""
        return self.producer.publish(
            self.queue,
            {"args": list(args), "kwargs": dict(kwargs or {})},
            type=self.name,
            delay=delay,
            priority=priority,
            message_id=message_id,
        )

    def __repr__(self) -> str:
        return f"Task({self.name!r}, queue={self.queue!r})"


def task(
    broker: Broker | Producer,
    *,
    queue: str = "tasks",
    name: str | None = None,
    registry: TaskRegistry | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]:
    """Make a function a task on `queue`: ``fn.delay(*args, **kwargs)`` queues a call.

    ```python
    from scalepatterns.queue import MemoryBroker, TaskRegistry, task, task_worker

    broker = MemoryBroker()
    registry = TaskRegistry()

    @task(broker, queue="reports", registry=registry)
    def build_report(user_id: int, fmt: str = "pdf") -> None:
        print(f"report for {user_id} as {fmt}")

    build_report.delay(42, fmt="csv")
    with task_worker(broker, "reports", registry=registry):
        pass  # a worker runs registered tasks by name
    broker.close()
    ```
    """
    producer = broker if isinstance(broker, Producer) else Producer(broker)
    chosen = registry if registry is not None else default_registry

    def decorate(fn: Callable[P, R]) -> Task[P, R]:
        task_name = name or f"{fn.__module__}.{fn.__qualname__}"
        created: Task[P, R] = Task(fn, producer, queue, task_name)
        chosen.register(created)
        return created

    return decorate


def task_worker(
    broker: Broker,
    queue: str = "tasks",
    *,
    registry: TaskRegistry | None = None,
    **options: Any,
) -> Worker:
    """A `Worker` on `queue` running registered tasks by name (options as for `Worker`)."""
    return Worker(broker, queue, registry if registry is not None else default_registry, **options)
