"""`fallback(value_or_function, on=...)`: answer something else when a call fails."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from scalepatterns._checks import exception_types
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.resilience._callables import (
    decorate,
    name_of,
    refuse_awaitable,
)
from scalepatterns.resilience.events import FallbackUsed

__all__ = ["Fallback", "fallback"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Fallback(Generic[T]):
    """Returns a fallback when the call raises one of `on`; build it with `fallback(...)`."""

    def __init__(
        self,
        value_or_function: T | Callable[[BaseException], T | Awaitable[T]],
        *,
        on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        listeners: Listeners | None = None,
    ) -> None:
        types = exception_types("on", on)
        self.on: tuple[type[BaseException], ...] = types
        self._value = value_or_function
        self._listeners = default_listeners if listeners is None else listeners

    def _used(self, fn: Callable[..., Any], exc: BaseException) -> None:
        if self._listeners.active:
            self._listeners.emit(FallbackUsed(source=name_of(fn), error=type(exc).__name__))

    def _answer(self, exc: BaseException) -> Any:
        value = self._value
        return value(exc) if callable(value) else value

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R | T:
        """Call `fn`; on one of `on`, return the fallback instead."""
        try:
            return fn(*args, **kwargs)
        except self.on as exc:
            self._used(fn, exc)
            return refuse_awaitable(  # type: ignore[no-any-return]
                self._answer(exc), "an async fallback function needs an async def call"
            )

    async def acall(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R | T:
        """Await `fn`; on one of `on`, return (or await) the fallback instead."""
        try:
            return await fn(*args, **kwargs)
        except self.on as exc:
            self._used(fn, exc)
            answer = self._answer(exc)
            if inspect.isawaitable(answer):
                answer = await answer
            return answer  # type: ignore[no-any-return]

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R | T]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R | T]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate `fn` (``def`` or ``async def``)."""
        return decorate(fn, self.call, self.acall)


def fallback(
    value_or_function: T | Callable[[BaseException], T | Awaitable[T]],
    *,
    on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    listeners: Listeners | None = None,
) -> Fallback[T]:
    """Answer `value_or_function` when the call raises one of `on`.

    A callable is called with the exception and its result returned (awaited if the
    decorated function is `async def` and it returns an awaitable); anything else is
    returned as is. To return a callable itself, wrap it: ``fallback(lambda exc: f)``.

    ```python
    from scalepatterns.resilience import fallback

    @fallback([], on=ConnectionError)
    def recommendations(user: int) -> list[str]:
        raise ConnectionError("recommender down")

    assert recommendations(7) == []
    ```
    """
    return Fallback(value_or_function, on=on, listeners=listeners)
