"""Helpers to run one scenario against the sync and the async side of a policy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest


class Side:
    """Runs a plain function through a policy's `call` or `acall` (as an async def)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def call(self, policy_call: Any, policy_acall: Any, fn: Callable[[], Any]) -> Any:
        if self.name == "sync":
            return policy_call(fn)

        async def afn() -> Any:
            await asyncio.sleep(0)
            return fn()

        return asyncio.run(policy_acall(afn))

    def through(self, policy: Any, fn: Callable[[], Any]) -> Any:
        return self.call(policy.call, policy.acall, fn)

    def decorate(self, decorator: Any, fn: Callable[[], Any]) -> Callable[[], Any]:
        """Decorate fn (or an async version of it) and return a sync callable running it."""
        if self.name == "sync":
            return decorator(fn)  # type: ignore[no-any-return]

        async def afn() -> Any:
            await asyncio.sleep(0)
            return fn()

        wrapped = decorator(afn)
        return lambda: asyncio.run(wrapped())

    def __repr__(self) -> str:
        return self.name


@pytest.fixture(params=["sync", "async"])
def side(request: pytest.FixtureRequest) -> Side:
    return Side(request.param)
