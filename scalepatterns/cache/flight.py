"""Single-flight: concurrent callers of one key share one load.

Waiters wake only for their own key (one event per key), and share the leader's result
or error instead of each retrying after it. In asyncio the load runs in its own task and
waiters await it through `asyncio.shield`, so cancelling one waiter, even the first,
does not cancel the load the others wait for.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["AsyncSingleFlight", "SingleFlight"]

T = TypeVar("T")


class _Call(Generic[T]):
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        # Made by the first waiter only, so an uncontended load allocates no lock. The
        # leader releases it once; each waiter that wakes releases it for the next.
        self.done: threading.Lock | None = None
        self.value: T | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[T]):
    """Thread-safe: one running `load` per key; everyone else waits for its outcome."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call[T]] = {}

    def in_flight(self, key: Hashable) -> bool:
        return key in self._calls

    def do(self, key: Hashable, load: Callable[[], T]) -> T:
        """Run `load` unless one runs for `key` already; either way return its result."""
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
            elif call.done is None:
                call.done = threading.Lock()
                call.done.acquire()
            done = call.done
        if not leader:
            assert done is not None
            with done:  # blocks until the leader (or the waiter before us) releases
                pass
            if call.error is not None:
                raise call.error
            return call.value  # type: ignore[return-value]
        try:
            call.value = load()
            return call.value
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
                done = call.done
            if done is not None:
                done.release()


class AsyncSingleFlight(Generic[T]):
    """One loading task per key per event loop; waiters are shielded from each other."""

    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Task[T]] = {}

    def _running(self, key: Hashable) -> asyncio.Task[T] | None:
        task = self._tasks.get(key)
        if task is not None and (task.done() or task.get_loop() is not asyncio.get_running_loop()):
            return None
        return task

    def in_flight(self, key: Hashable) -> bool:
        return self._running(key) is not None

    def start(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        """The task loading `key`, started now if none runs."""
        task = self._running(key)
        if task is None:
            task = asyncio.ensure_future(_run(load))
            self._tasks[key] = task
            task.add_done_callback(lambda t: self._forget(key, t))
        return task

    def _forget(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: a background refresh nobody awaits

    async def do(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        """Await the load for `key`, starting it if needed; cancelling this caller cancels
        only this caller."""
        return await asyncio.shield(self.start(key, load))


async def _run(load: Callable[[], Awaitable[Any]]) -> Any:
    return await load()
