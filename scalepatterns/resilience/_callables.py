"""Telling `async def` callables apart from plain ones, the careful way."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from scalepatterns._coroutines import is_coroutine_callable

__all__ = [
    "decorate",
    "is_coroutine_callable",
    "name_of",
    "refuse_awaitable",
]

T = TypeVar("T")


def name_of(fn: Callable[..., Any]) -> str:
    """A short, low-cardinality name for events: the function's qualified name."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return str(name)


def decorate(
    fn: Callable[..., Any],
    call: Callable[..., Any],
    acall: Callable[..., Any],
) -> Callable[..., Any]:
    """Wrap `fn` so each call goes through a policy's `call` (or `acall` for `async def`).

    The wrapper keeps `fn`'s name, docstring and signature (`functools.wraps`); the
    policies' typed `__call__` overloads give it `fn`'s parameters for type checkers.
    """
    if is_coroutine_callable(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await acall(fn, *args, **kwargs)

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return call(fn, *args, **kwargs)

    return wrapper


def refuse_awaitable(value: T | Awaitable[T], message: str) -> T:
    """`value`, or `TypeError(message)` if a sync code path was handed an awaitable.

    A coroutine is closed first, so it does not also warn that it was never awaited.
    """
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        raise TypeError(message)
    return value
