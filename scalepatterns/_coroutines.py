"""Telling ``async def`` callables apart from plain ones, the careful way (shared by blocks)."""

from __future__ import annotations

import functools
import inspect
from typing import Any

__all__ = ["is_coroutine_callable"]


def is_coroutine_callable(fn: Any) -> bool:
    """True for ``async def`` functions, `functools.partial`s of them, and objects with an
    ``async def __call__`` (what `inspect.iscoroutinefunction` alone misses).

    A class is never one: calling it builds an instance, even if its ``__call__`` is async.
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isfunction(fn) or inspect.ismethod(fn) or inspect.isclass(fn):
        return False
    call = getattr(fn, "__call__", None)  # noqa: B004 - we want the method itself
    return call is not None and inspect.iscoroutinefunction(call)
