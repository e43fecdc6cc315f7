"""`ConcurrencyLimiter`: a bulkhead that caps how many calls run at once (threads and tasks)."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar, cast

from typing_extensions import ParamSpec

from scalepatterns._checks import seconds
from scalepatterns._coroutines import is_coroutine_callable
from scalepatterns._within import within
from scalepatterns.backpressure.errors import BulkheadFull
from scalepatterns.backpressure.events import BulkheadRejected
from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Listeners, default_listeners

__all__ = ["ConcurrencyLimiter"]

P = ParamSpec("P")
R = TypeVar("R")


class _Waiter:
    """One caller waiting for a slot; `notify` wakes it (a thread's event, a task's future)."""

    __slots__ = ("event", "future", "granted", "notify")

    def __init__(
        self,
        notify: Callable[[], object],
        event: threading.Event | None = None,
        future: asyncio.Future[None] | None = None,
    ) -> None:
        self.granted = False
        self.notify = notify
        self.event = event
        self.future = future


def _thread_waiter() -> _Waiter:
    event = threading.Event()
    return _Waiter(event.set, event=event)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ConcurrencyLimiter:
    """At most `max_concurrent` calls inside at once; up to `max_waiting` more wait their turn.

    Usable as ``with limiter:``, ``async with limiter:`` and as a decorator on ``def`` and
    ``async def``. Threads and asyncio tasks share the same slots; a freed slot is handed
    to the longest waiter (first come, first served).

    Args:
        max_concurrent: slots (>= 1).
        max_waiting: callers that may wait for a slot (0, the default: refuse at once when
            full; None: no bound).
        timeout: seconds a waiter waits before giving up (None: as long as it takes).
        name: low-cardinality name for errors and events.

    Raises (on entry):
        BulkheadFull: full with a full waiting room (``reason="full"``), or no slot within
            `timeout` (``reason="timeout"``).

    ```python
    from scalepatterns import BulkheadFull, ConcurrencyLimiter

    bulkhead = ConcurrencyLimiter(1, name="payments")
    with bulkhead:
        try:
            with bulkhead:
                pass
        except BulkheadFull as exc:
            assert exc.reason == "full"
    assert bulkhead.in_use == 0
    ```
    """

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_waiting: int | None = 0,
        timeout: float | None = None,
        name: str = "bulkhead",
        listeners: Listeners | None = None,
    ) -> None:
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise ConfigurationError("max_concurrent", max_concurrent, "an integer >= 1")
        if max_concurrent < 1:
            raise ConfigurationError("max_concurrent", max_concurrent, "an integer >= 1")
        if max_waiting is not None and (
            isinstance(max_waiting, bool) or not isinstance(max_waiting, int) or max_waiting < 0
        ):
            raise ConfigurationError("max_waiting", max_waiting, "None or an integer >= 0")
        seconds("timeout", timeout, allow_none=True)
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        self.timeout = timeout
        self.name = name
        self._listeners = listeners if listeners is not None else default_listeners
        self._lock = threading.Lock()
        self._active = 0
        self._waiters: deque[_Waiter] = deque()
        self.rejected = 0

    @property
    def in_use(self) -> int:
        """Slots taken right now."""
        return self._active

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot right now."""
        return len(self._waiters)

    def _refuse(self, reason: str) -> BulkheadFull:
        self.rejected += 1
        if self._listeners.active:
            self._listeners.emit(BulkheadRejected(self.name, reason, self.max_concurrent, 0))
        return BulkheadFull(self.name, self.max_concurrent, reason)

    def _enter(self, make_waiter: Callable[[], _Waiter]) -> _Waiter | None:
        """Take a free slot (None), or queue a waiter; refuse when the waiting room is full."""
        with self._lock:
            if self._active < self.max_concurrent and not self._waiters:
                self._active += 1
                return None
            if self.max_waiting is None or len(self._waiters) < self.max_waiting:
                waiter = make_waiter()
                self._waiters.append(waiter)
                return waiter
        raise self._refuse("full")  # outside the lock: listeners may call back in

    def acquire(self, timeout: float | None = None) -> None:
        """Take a slot, waiting up to `timeout` (default: the limiter's) for one."""
        timeout = self.timeout if timeout is None else timeout
        waiter = self._enter(_thread_waiter)
        if waiter is None:
            return
        try:
            if cast("threading.Event", waiter.event).wait(timeout):
                return
        except BaseException:  # KeyboardInterrupt, a gevent timeout: leave no waiter behind
            self._withdraw(waiter)
            raise
        with self._lock:
            if waiter.granted:  # the slot arrived just as the wait timed out
                return
            self._waiters.remove(waiter)
        raise self._refuse("timeout")

    async def aacquire(self, timeout: float | None = None) -> None:
        """Take a slot from async code, suspending the task (never the loop) while waiting."""
        timeout = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()

        def task_waiter() -> _Waiter:
            future: asyncio.Future[None] = loop.create_future()
            return _Waiter(lambda: loop.call_soon_threadsafe(_resolve, future), future=future)

        waiter = self._enter(task_waiter)
        if waiter is None:
            return
        try:
            await within(cast("asyncio.Future[None]", waiter.future), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            self._withdraw(waiter)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise self._refuse("timeout") from None

    def _withdraw(self, waiter: _Waiter) -> None:
        """Take `waiter` out of the queue; a slot it was handed meanwhile goes to the next."""
        with self._lock:
            granted = waiter.granted
            if not granted:
                self._waiters.remove(waiter)
        if granted:
            self.release()

    def release(self) -> None:
        """Give a slot back; the longest waiter, if any, gets it."""
        with self._lock:
            if self._active <= 0:
                raise RuntimeError(f"bulkhead {self.name!r} released more often than acquired")
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter.granted = True
                waiter.notify()
                return
            self._active -= 1

    def __enter__(self) -> ConcurrencyLimiter:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> ConcurrencyLimiter:
        await self.aacquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a ``def`` or ``async def`` so every call holds a slot while it runs."""
        if is_coroutine_callable(fn):
            afn = cast("Callable[P, Awaitable[Any]]", fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with self:
                    return await afn(*args, **kwargs)

            return cast("Callable[P, R]", async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with self:
                return fn(*args, **kwargs)

        return wrapper

    def __repr__(self) -> str:
        return (
            f"ConcurrencyLimiter({self.name!r}, in_use={self._active}/{self.max_concurrent}, "
            f"waiting={len(self._waiters)})"
        )
