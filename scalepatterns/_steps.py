"""Running a flow of I/O steps with plain calls (`drive`) or with awaits (`adrive`).

A flow is a generator that yields each piece of I/O it needs as ``(function,
arguments)`` and is sent the result, or has the exception thrown in: it decides, the
executors only carry out, as tenacity's ``iter()`` is run by its two loops. Every block
with a sync and an async form writes its decisions once this way: the cache's misses,
invalidations and Redis multi-command operations, the worker's handling of a delivery,
the dead-letter tools, the event buses, the Redis Streams broker and the outbox.

Every exception is thrown into the flow, cancellation and KeyboardInterrupt included: a
flow releases a lock, gives back messages or keeps unsent work in ``finally`` and
``except BaseException`` blocks, which must run (and may still do I/O) before the
exception leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

__all__ = ["Flow", "R", "Step", "adrive", "drive"]

R = TypeVar("R")
Step = tuple[Callable[..., Any], tuple[Any, ...]]
"""One piece of I/O: a function and its arguments."""
Flow = Generator[Step, Any, R]


def drive(flow: Flow[R]) -> R:
    """Run `flow`'s steps as plain calls; return what it returns."""
    # A tight loop: the cache runs a flow on every miss, in the caller's thread.
    send, throw = flow.send, flow.throw
    try:
        function, arguments = send(None)
        while True:
            try:
                result = function(*arguments)
            except BaseException as exc:  # noqa: BLE001, PERF203 - thrown into the flow
                function, arguments = throw(exc)
            else:
                function, arguments = send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class _Steps(Generic[R]):
    """Iterates the steps of `flow`, handing it the `result` or `error` of the last one."""

    __slots__ = ("_flow", "error", "result", "value")

    def __init__(self, flow: Flow[R]) -> None:
        self._flow = flow
        self.result: Any = None
        self.error: BaseException | None = None
        self.value: Any = None

    def __iter__(self) -> _Steps[R]:
        return self

    def __next__(self) -> Step:
        result, error, self.result, self.error = self.result, self.error, None, None
        try:
            return self._flow.send(result) if error is None else self._flow.throw(error)
        except StopIteration as stop:
            self.value = stop.value
            raise StopIteration from None


async def adrive(flow: Flow[R]) -> R:
    """Run `flow`'s steps, awaiting each; return what it returns."""
    steps = _Steps(flow)
    for function, arguments in steps:
        try:
            steps.result = await function(*arguments)
        except BaseException as exc:  # noqa: BLE001, PERF203 - thrown into the flow, which decides
            steps.error = exc
    return steps.value  # type: ignore[no-any-return]
