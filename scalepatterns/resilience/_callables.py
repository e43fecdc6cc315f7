"""Telling `async def` callables apart from plain ones, the careful way."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["is_coroutine_callable", "name_of"]


def is_coroutine_callable(fn: Callable[..., Any]) -> bool:
    """True for `async def` functions, `functools.partial`s of them, and objects with an
    `async def __call__` (what `inspect.iscoroutinefunction` alone misses)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isfunction(fn) or inspect.ismethod(fn) or inspect.isclass(fn):
        return False
    call = getattr(fn, "__call__", None)  # noqa: B004 - we want the method itself
    return call is not None and inspect.iscoroutinefunction(call)


def name_of(fn: Callable[..., Any]) -> str:
    """A short, low-cardinality name for events: the function's qualified name."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return str(name)
