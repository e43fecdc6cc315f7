"""Telling ``async def`` callables apart from plain ones, the careful way (shared by blocks)."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["call_async", "has_async_commands", "is_coroutine_callable", "run_awaitable"]

T = TypeVar("T")


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


def run_awaitable(awaitable: Awaitable[T]) -> T:
    """Run `awaitable` to completion on a new event loop (from a thread without one)."""

    async def wait() -> T:
        return await awaitable

    return asyncio.run(wait())


async def call_async(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call `fn` from async code: awaited when it is ``async def``; a plain function runs
    in a thread (`asyncio.to_thread`) so it cannot stall the loop, and an awaitable it
    returns is awaited."""
    if is_coroutine_callable(fn):
        return await fn(*args, **kwargs)
    result = await asyncio.to_thread(fn, *args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def has_async_commands(client: Any) -> bool:
    """True for a `redis.asyncio` client: its ``execute_command`` is ``async def`` (its
    command methods are plain functions returning coroutines, so they tell nothing)."""
    return inspect.iscoroutinefunction(getattr(type(client), "execute_command", None))
