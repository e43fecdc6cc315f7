"""Running a flow of I/O steps with plain calls or with awaits.

A flow is a generator that yields each piece of I/O it needs as ``(function,
arguments)`` and receives the result (or has the exception thrown in); it decides, the
executors only carry out. The worker's handling of a delivery and the dead-letter tools
are written this way once, and run by `drive` (sync) or `adrive` (async), as tenacity's
``iter()`` is run by its two loops.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

__all__ = ["Flow", "Step", "Steps", "adrive", "drive"]

R = TypeVar("R")
Step = tuple[Callable[..., Any], tuple[Any, ...]]
"""One piece of I/O: a function and its arguments."""
Flow = Generator[Step, Any, R]


class Steps(Generic[R]):
    """Iterates the steps of `flow`, handing each the `result` or `error` of the last."""

    def __init__(self, flow: Flow[R]) -> None:
        self._flow = flow
        self.result: Any = None
        self.error: Exception | None = None
        self.value: R | None = None

    def __iter__(self) -> Steps[R]:
        return self

    def __next__(self) -> Step:
        result, error, self.result, self.error = self.result, self.error, None, None
        try:
            return self._flow.send(result) if error is None else self._flow.throw(error)
        except StopIteration as stop:
            self.value = stop.value
            raise StopIteration from None

    def call(self, function: Callable[..., Any], arguments: tuple[Any, ...]) -> None:
        """Run a step with a plain call."""
        try:
            self.result = function(*arguments)
        except Exception as exc:  # noqa: BLE001 - thrown into the flow, which decides
            self.error = exc


def drive(flow: Flow[R]) -> R:
    """Run `flow`'s steps as plain calls; return what it returns."""
    steps = Steps(flow)
    for function, arguments in steps:
        steps.call(function, arguments)
    return steps.value  # type: ignore[return-value]


async def adrive(flow: Flow[R]) -> R:
    """Run `flow`'s steps, awaiting each; return what it returns."""
    steps = Steps(flow)
    for function, arguments in steps:
        try:
            steps.result = await function(*arguments)
        except Exception as exc:  # noqa: BLE001, PERF203 - thrown into the flow, which decides
            steps.error = exc
    return steps.value  # type: ignore[return-value]
