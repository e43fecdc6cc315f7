"""`timeout(seconds)` for sync and async calls, and a deadline shared by nested calls.

The deadline lives in a `contextvars.ContextVar`: a `timeout` (or a `deadline` block)
sets it, and every call made inside, at any depth, sees the **remaining** budget through
`remaining()`. A nested `timeout(5)` under an outer one with 0.3 s left gets 0.3 s, not 5.
`retry` stops scheduling attempts that could not start before the deadline.

**async**: the coroutine is cancelled when the budget runs out (`asyncio.wait_for`
semantics, Python 3.10 compatible) and `DeadlineExceeded` is raised.

**sync**: Python cannot interrupt a running function. With ``mode="thread"`` (default) the
call runs on a worker thread while the caller waits at most the budget; when it runs
out the caller gets `DeadlineExceeded` at once, but **the call keeps running on its
worker thread until it returns by itself**, and its result or error is then dropped.
The workers are daemon threads: a call that never returns does not block interpreter
exit.
Give the callee its own I/O timeouts (read `remaining()`), or it may hold a worker for
long; the worker pool is bounded (`max_workers`, 32 by default) and calls queue when
it is full (time spent queued counts against the budget). With ``mode="inline"`` the
call runs on the caller's thread, is never interrupted, and its result is dropped
(`DeadlineExceeded` raised) if it returns after the deadline: the callee is expected to
honour `remaining()` itself (cooperative deadlines, no thread hop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Literal, ParamSpec, TypeVar, overload

from scalepatterns._checks import seconds as check_seconds
from scalepatterns._within import within
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError, DeadlineExceeded
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.resilience._callables import decorate, name_of
from scalepatterns.resilience.events import TimeoutExpired

__all__ = ["Timeout", "deadline", "remaining", "timeout"]

P = ParamSpec("P")
R = TypeVar("R")

# (clock, monotonic expiry on that clock), or None outside any deadline.
_DEADLINE: contextvars.ContextVar[tuple[Clock, float] | None] = contextvars.ContextVar(
    "scalepatterns_deadline", default=None
)


class _DaemonPool(concurrent.futures.Executor):
    """A bounded pool of **daemon** worker threads, started on demand.

    Unlike `ThreadPoolExecutor`, whose workers the interpreter joins at exit, a call that
    never returns here cannot keep the process from exiting.
    """

    def __init__(self, max_workers: int) -> None:
        self._max = max_workers
        self._queue: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[[], Any]]]
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(
        self, fn: Callable[..., R], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[R]:
        future: concurrent.futures.Future[R] = concurrent.futures.Future()
        self._queue.put((future, functools.partial(fn, *args, **kwargs)))
        with self._lock:
            # Claim an idle worker for this call, so that a second call submitted before
            # that worker woke up starts its own instead of queueing behind the first.
            if self._idle > 0:
                self._idle -= 1
            elif self._threads < self._max:
                self._threads += 1
                threading.Thread(
                    target=self._work, name="scalepatterns-timeout", daemon=True
                ).start()
        return future

    def _work(self) -> None:
        while True:
            future, call = self._queue.get()
            error: BaseException | None = None
            result: Any = None
            running = future.set_running_or_notify_cancel()
            if running:
                try:
                    result = call()
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                    error = exc
            # Idle before the caller hears back, so its next call finds this worker.
            with self._lock:
                self._idle += 1
            if error is not None:
                future.set_exception(error)
                error = None
            elif running:
                future.set_result(result)


_shared_pool = _DaemonPool(max_workers=32)


def remaining() -> float | None:
    """Seconds left of the innermost deadline in this context (None: no deadline).

    May be zero or negative once the deadline has passed.
    """
    current = _DEADLINE.get()
    if current is None:
        return None
    clock, expires = current
    return expires - clock.monotonic()


def _budget(seconds: float) -> float:
    left = remaining()
    return seconds if left is None else min(seconds, left)


@contextlib.contextmanager
def deadline(seconds: float, *, clock: Clock = SYSTEM_CLOCK) -> Iterator[float]:
    """Set a deadline for the block (never later than an enclosing one); yields the budget.

    It is not enforced by itself: `timeout`, `retry` and your code read it through
    `remaining()`.

    ```python
    from scalepatterns.resilience import deadline, remaining

    assert remaining() is None
    with deadline(2.0):
        with deadline(10.0) as budget:     # capped by the outer deadline
            assert budget <= 2.0
            assert 0 < remaining() <= 2.0
    ```
    """
    check_seconds("seconds", seconds, positive=True)
    budget = _budget(float(seconds))
    token = _DEADLINE.set((clock, clock.monotonic() + budget))
    try:
        yield budget
    finally:
        _DEADLINE.reset(token)


class Timeout:
    """A time budget for each call; build it with `timeout(...)`."""

    def __init__(
        self,
        seconds: float,
        *,
        mode: Literal["thread", "inline"] = "thread",
        executor: concurrent.futures.Executor | None = None,
        clock: Clock = SYSTEM_CLOCK,
        listeners: Listeners | None = None,
    ) -> None:
        check_seconds("seconds", seconds, positive=True)
        if mode not in ("thread", "inline"):
            raise ConfigurationError("mode", mode, "'thread' or 'inline'")
        self.seconds = float(seconds)
        self.mode = mode
        self._executor = executor
        self._clock = clock
        self._listeners = default_listeners if listeners is None else listeners

    def _expired(self, fn: Callable[..., Any], budget: float) -> DeadlineExceeded:
        if self._listeners.active:
            self._listeners.emit(TimeoutExpired(source=name_of(fn), timeout=budget))
        return DeadlineExceeded(budget, name_of(fn))

    def _enter(
        self, fn: Callable[..., Any]
    ) -> tuple[float, float, contextvars.Token[tuple[Clock, float] | None]]:
        """Start a budget: (seconds, monotonic expiry, the context token to reset)."""
        budget = _budget(self.seconds)
        if budget <= 0:
            raise self._expired(fn, max(budget, 0.0))
        expires = self._clock.monotonic() + budget
        return budget, expires, _DEADLINE.set((self._clock, expires))

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call `fn` with this budget (see the module docs for what "sync" means here).

        Raises:
            DeadlineExceeded: the budget (or an enclosing deadline) ran out.
        """
        budget, expires, token = self._enter(fn)
        try:
            if self.mode == "inline":
                result = fn(*args, **kwargs)
            else:
                context = contextvars.copy_context()
                executor = self._executor or _shared_pool
                future = executor.submit(context.run, functools.partial(fn, *args, **kwargs))
                try:
                    result = future.result(timeout=budget)
                except concurrent.futures.TimeoutError as exc:
                    future.cancel()  # only helps if it had not started yet
                    raise self._expired(fn, budget) from exc
        finally:
            _DEADLINE.reset(token)
        if self._clock.monotonic() > expires:
            raise self._expired(fn, budget)  # a late answer is dropped
        return result

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await `fn` with this budget; it is cancelled when the budget runs out.

        Raises:
            DeadlineExceeded: the budget (or an enclosing deadline) ran out.
        """
        budget, expires, token = self._enter(fn)
        try:
            result = await within(fn(*args, **kwargs), budget)
        except DeadlineExceeded:
            raise  # a nested deadline ran out first: keep its error
        except asyncio.TimeoutError as exc:
            raise self._expired(fn, budget) from exc
        finally:
            _DEADLINE.reset(token)
        if self._clock.monotonic() > expires:
            raise self._expired(fn, budget)
        return result

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate `fn` (``def`` or ``async def``) with this budget per call."""
        return decorate(fn, self.call, self.acall)

    def __repr__(self) -> str:
        return f"Timeout({self.seconds}, mode={self.mode!r})"


def timeout(
    seconds: float,
    *,
    mode: Literal["thread", "inline"] = "thread",
    executor: concurrent.futures.Executor | None = None,
    clock: Clock = SYSTEM_CLOCK,
    listeners: Listeners | None = None,
) -> Timeout:
    """A per-call time budget; use as ``@timeout(2.0)`` or ``timeout(2.0).call(fn, ...)``.

    Args:
        seconds: the budget of each call (capped by any enclosing deadline).
        mode: for sync functions, ``"thread"`` (run on a worker thread, stop waiting at
            the deadline) or ``"inline"`` (run on the caller's thread, drop a late
            result). `async def` functions are always cancelled at the deadline.
        executor: the thread pool for ``mode="thread"`` (default: a shared pool of 32).
        clock: time source for the deadline seen by `remaining()`.
        listeners: event registry.

    Example:

    ```python
    import asyncio
    from scalepatterns import DeadlineExceeded
    from scalepatterns.resilience import remaining, timeout

    @timeout(0.05)
    async def slow() -> None:
        await asyncio.sleep(10)

    try:
        asyncio.run(slow())
    except DeadlineExceeded as exc:
        assert exc.timeout == 0.05

    @timeout(1.0)
    def budget_left() -> float:
        left = remaining()
        assert left is not None
        return left

    assert 0 < budget_left() <= 1.0
    ```
    """
    return Timeout(seconds, mode=mode, executor=executor, clock=clock, listeners=listeners)
