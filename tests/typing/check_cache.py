"""Type-level checks of the cache decorator, run by mypy --strict, never executed."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from typing_extensions import assert_type

from scalepatterns.cache import Cache, CacheInfo

cache = Cache.memory()


@cache.cached(ttl=10)
def load(user_id: int, *, fresh: bool = False) -> dict[str, int]:
    return {"id": user_id}


@cache.cached
def plain(x: str) -> str:
    return x


@cache.cached(stale_ttl=5)
async def aload(user_id: int) -> str:
    return str(user_id)


assert_type(load(1), dict[str, int])
assert_type(load(1, fresh=True), dict[str, int])
assert_type(plain("a"), str)
assert_type(load.cache_info(), CacheInfo)
assert_type(load.refresh(2), dict[str, int])
load.invalidate(1)


async def use() -> None:
    assert_type(await aload(1), str)
    assert_type(await aload.refresh(1), str)
    assert_type(aload.cache_info(), CacheInfo)
    coroutine: Coroutine[Any, Any, str] = aload(2)
    await coroutine
