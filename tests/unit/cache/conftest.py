from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest

from scalepatterns.cache import Cache
from scalepatterns.cache.redis_backend import AsyncRedisBackend, RedisBackend
from scalepatterns.clock import FakeClock
from scalepatterns.events import EventRecorder, Listeners

ENGINES = ["memory", "fakeredis", "two-tier"]


class Harness:
    """One cache on one engine, driven the same way for `def` and `async def` functions."""

    def __init__(self, engine: str, mode: str) -> None:
        self.engine, self.mode = engine, mode
        self.clock = FakeClock(start=1000.0)
        self.listeners = Listeners()
        self.recorder = EventRecorder()
        self.listeners.add(self.recorder)
        self.server = fakeredis.FakeServer()
        self.redis = fakeredis.FakeRedis(server=self.server)
        common: dict[str, Any] = {
            "namespace": "t",
            "ttl": 60,
            "jitter": 0.0,
            "clock": self.clock,
            "listeners": self.listeners,
        }
        if engine == "memory":
            self.cache = Cache.memory(maxsize=1000, **common)
        else:
            async_backend = AsyncRedisBackend(fakeredis.FakeAsyncRedis(server=self.server))
            local = None
            if engine == "two-tier":
                from scalepatterns.cache import MemoryBackend

                local = MemoryBackend(1000, clock=self.clock)
            self.cache = Cache(
                RedisBackend(self.redis),
                async_backend=async_backend,
                local=local,
                local_ttl=5,
                **common,
            )
        self.calls: list[Any] = []

    def decorate(self, fn: Callable[..., Any], **options: Any) -> Any:
        """Cache `fn` (a plain function) as a def or an async def per the mode."""
        calls = self.calls

        if self.mode == "sync":

            def sync_fn(*args: Any, **kwargs: Any) -> Any:
                calls.append(args or tuple(kwargs.values()))
                return fn(*args, **kwargs)

            sync_fn.__qualname__ = fn.__qualname__
            sync_fn.__signature__ = __import__("inspect").signature(fn)  # type: ignore[attr-defined]
            return self.cache.cached(**options)(sync_fn)

        async def async_fn(*args: Any, **kwargs: Any) -> Any:
            calls.append(args or tuple(kwargs.values()))
            return fn(*args, **kwargs)

        async_fn.__qualname__ = fn.__qualname__
        async_fn.__signature__ = __import__("inspect").signature(fn)  # type: ignore[attr-defined]
        return self.cache.cached(**options)(async_fn)

    def run(self, value: Any) -> Any:
        """Resolve a call's result (await it in async mode)."""
        if self.mode == "sync":
            return value

        async def wait() -> Any:
            result = await value
            # A real service's loop keeps running: let background refreshes finish.
            others = asyncio.all_tasks() - {asyncio.current_task()}
            await asyncio.gather(*others, return_exceptions=True)
            return result

        return asyncio.run(wait()) if asyncio.iscoroutine(value) else value

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self.run(fn(*args, **kwargs))


@pytest.fixture(
    params=[(e, m) for e in ENGINES for m in ("sync", "async")], ids=lambda p: f"{p[0]}-{p[1]}"
)
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    harness = Harness(*request.param)
    yield harness
    harness.cache.close()
