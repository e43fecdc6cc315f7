"""`@task`: turn a function into something you can `.delay()` onto a queue."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar, cast, overload

from typing_extensions import ParamSpec

from scalepatterns._coroutines import call_async, is_coroutine_callable
from scalepatterns.errors import ConfigurationError
from scalepatterns.queue.async_producer import AsyncProducer
from scalepatterns.queue.async_worker import AsyncWorker
from scalepatterns.queue.broker import AsyncBroker, Broker
from scalepatterns.queue.errors import Reject
from scalepatterns.queue.message import Message
from scalepatterns.queue.producer import Producer
from scalepatterns.queue.worker import Worker

__all__ = ["AsyncTask", "Task", "TaskRegistry", "default_registry", "task", "task_worker"]

P = ParamSpec("P")
R = TypeVar("R")


class TaskRegistry:
    """Task name -> task; a worker looks tasks up here by the message's type.

    A registry is the handler of a task worker: sync (`Worker`) or async (`AsyncWorker`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, _TaskBase[Any, Any]] = {}

    def register(self, task: _TaskBase[Any, Any]) -> None:
        with self._lock:
            existing = self._tasks.get(task.name)
            if existing is not None and existing.fn is not task.fn:
                raise ConfigurationError(
                    "name", task.name, "a task name not already used by another function"
                )
            self._tasks[task.name] = task

    def get(self, name: str) -> _TaskBase[Any, Any] | None:
        return self._tasks.get(name)

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def resolve(self, message: Message) -> tuple[Callable[..., Any], list[Any], dict[str, Any]]:
        """The function the message names and its arguments; `Reject` if there is none or
        they can never fit (no retry could help)."""
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
            try:
                task.signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise Reject(f"task {task.name!r} cannot take these arguments: {exc}") from exc
        return task.fn, args, kwargs

    def __call__(self, message: Message) -> Any:
        """A `Worker`'s handler: run the task (an ``async def`` one returns its coroutine,
        which the worker runs on its event loop)."""
        fn, args, kwargs = self.resolve(message)
        return fn(*args, **kwargs)

    async def acall(self, message: Message) -> Any:
        """An `AsyncWorker`'s handler: await the task (a plain function in a thread)."""
        fn, args, kwargs = self.resolve(message)
        return await call_async(fn, *args, **kwargs)


default_registry = TaskRegistry()
"""Where `@task` registers unless given another registry."""


class _TaskBase(Generic[P, R]):
    """A function that can also be sent to a queue; calling it runs it here and now."""

    def __init__(self, fn: Callable[P, R], queue: str, name: str) -> None:
        self.fn = fn
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

    def _body(self, args: Sequence[Any], kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
        return {"args": list(args), "kwargs": dict(kwargs or {})}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, queue={self.queue!r})"


class Task(_TaskBase[P, R]):
    """A task on a sync `Producer`: `delay` returns the message id once confirmed."""

    def __init__(self, fn: Callable[P, R], producer: Producer, queue: str, name: str) -> None:
        super().__init__(fn, queue, name)
        self.producer = producer

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
            self._body(args, kwargs),
            type=self.name,
            delay=delay,
            priority=priority,
            message_id=message_id,
        )


class AsyncTask(_TaskBase[P, R]):
    """A task on an `AsyncProducer`: ``await fn.delay(...)`` returns the message id once
    confirmed."""

    def __init__(self, fn: Callable[P, R], producer: AsyncProducer, queue: str, name: str) -> None:
        super().__init__(fn, queue, name)
        self.producer = producer

    async def delay(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Queue a call with these arguments; returns the message id once confirmed."""
        return await self.apply_async(args, kwargs)

    async def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        delay: float | None = None,
        priority: int | None = None,
        message_id: str | None = None,
    ) -> str:
        """Queue a call; `delay` seconds later; returns the message id once confirmed."""
        return await self.producer.publish(
            self.queue,
            self._body(args, kwargs),
            type=self.name,
            delay=delay,
            priority=priority,
            message_id=message_id,
        )


def _is_async(broker: object) -> bool:
    return isinstance(broker, AsyncProducer) or is_coroutine_callable(
        getattr(broker, "publish", None)
    )


@overload
def task(
    broker: Broker | Producer,
    *,
    queue: str = "tasks",
    name: str | None = None,
    registry: TaskRegistry | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


@overload
def task(
    broker: AsyncBroker | AsyncProducer,
    *,
    queue: str = "tasks",
    name: str | None = None,
    registry: TaskRegistry | None = None,
) -> Callable[[Callable[P, R]], AsyncTask[P, R]]: ...


def task(
    broker: Broker | Producer | AsyncBroker | AsyncProducer,
    *,
    queue: str = "tasks",
    name: str | None = None,
    registry: TaskRegistry | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]] | Callable[[Callable[P, R]], AsyncTask[P, R]]:
    """Make a function a task on `queue`: ``fn.delay(*args, **kwargs)`` queues a call.

    On an `AsyncBroker` or `AsyncProducer` the task is an `AsyncTask`: ``await
    fn.delay(...)``. Either way the function itself may be sync or ``async def``.

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
    chosen = registry if registry is not None else default_registry
    if _is_async(broker):
        async_producer = broker if isinstance(broker, AsyncProducer) else None
        async_producer = async_producer or AsyncProducer(cast(AsyncBroker, broker))

        def decorate_async(fn: Callable[P, R]) -> AsyncTask[P, R]:
            created = AsyncTask(fn, async_producer, queue, name or _default_name(fn))
            chosen.register(created)
            return created

        return decorate_async
    producer = broker if isinstance(broker, Producer) else Producer(cast(Broker, broker))

    def decorate(fn: Callable[P, R]) -> Task[P, R]:
        created = Task(fn, producer, queue, name or _default_name(fn))
        chosen.register(created)
        return created

    return decorate


def _default_name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


@overload
def task_worker(
    broker: Broker, queue: str = "tasks", *, registry: TaskRegistry | None = None, **options: Any
) -> Worker: ...


@overload
def task_worker(
    broker: AsyncBroker,
    queue: str = "tasks",
    *,
    registry: TaskRegistry | None = None,
    **options: Any,
) -> AsyncWorker: ...


def task_worker(
    broker: Broker | AsyncBroker,
    queue: str = "tasks",
    *,
    registry: TaskRegistry | None = None,
    **options: Any,
) -> Worker | AsyncWorker:
    """A worker on `queue` running registered tasks by name (options as for `Worker`):
    an `AsyncWorker` on an `AsyncBroker`."""
    handler = registry if registry is not None else default_registry
    if _is_async(broker):
        return AsyncWorker(cast(AsyncBroker, broker), queue, handler, **options)
    return Worker(cast(Broker, broker), queue, handler, **options)
