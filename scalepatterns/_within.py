"""Awaiting with a time limit without losing the caller's cancellation (shared by blocks).

Before Python 3.12, `asyncio.wait_for` returns the result when its awaitable completes in
the same loop iteration as a cancellation of the caller, and the cancellation is lost
(CPython gh-86296): an `AsyncWorker.run()` cancelled just as its consumer started kept
consuming. `within` never drops one.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["within"]

T = TypeVar("T")


async def within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """Await `awaitable` for at most `timeout` seconds (None: without a limit).

    Raises `asyncio.TimeoutError` when the time runs out (the awaitable is cancelled
    first), and `asyncio.CancelledError` whenever the caller was cancelled, even if the
    awaitable completed at that moment. On Python 3.10, a cancellation that arrives in
    the very iteration the time runs out is reported as the timeout.
    """
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(timeout):
            return await awaitable
    if timeout is None:
        return await awaitable
    inner = asyncio.ensure_future(awaitable)
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        inner.cancel()

    handle = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        return await inner
    except asyncio.CancelledError:
        if expired and inner.cancelled():
            raise asyncio.TimeoutError from None
        raise
    finally:
        handle.cancel()
