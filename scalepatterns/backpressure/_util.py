"""Small helpers shared by the limiters."""

from __future__ import annotations

import functools
import inspect
from typing import Any

__all__ = ["is_coroutine_callable"]


def is_coroutine_callable(fn: Any) -> bool:
    """True for ``async def`` functions, partials of them, and objects with an async __call__."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - we need the class's __call__
    return not inspect.isfunction(fn) and call is not None and inspect.iscoroutinefunction(call)
