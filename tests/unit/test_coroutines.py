"""The shared coroutine-function check every decorator and the queue worker use."""

from __future__ import annotations

import functools

from scalepatterns._coroutines import is_coroutine_callable


async def _fetch(url: str, retries: int) -> str:
    return url


def _plain(url: str) -> str:
    return url


class _AsyncCallable:
    async def __call__(self, message: object) -> None:
        return None


class _SyncCallable:
    def __call__(self, message: object) -> None:
        return None


def test_async_functions_partials_and_async_call_objects() -> None:
    assert is_coroutine_callable(_fetch)
    assert is_coroutine_callable(functools.partial(_fetch, "u"))
    assert is_coroutine_callable(functools.partial(functools.partial(_fetch, "u"), 1))
    assert is_coroutine_callable(_AsyncCallable())
    assert is_coroutine_callable(_AsyncCallable().__call__)


def test_plain_callables_and_classes() -> None:
    assert not is_coroutine_callable(_plain)
    assert not is_coroutine_callable(functools.partial(_plain, "u"))
    assert not is_coroutine_callable(_SyncCallable())
    assert not is_coroutine_callable(print)
    # Calling the class builds an instance; the queue worker's own copy said "async".
    assert not is_coroutine_callable(_AsyncCallable)
