"""The wrapper a cached function is replaced with, and its hand-written hit paths.

Every decision lives in the flows (`_flows.py`); these wrappers repeat one of them only,
"a fresh entry is served", because a hit must cost a dict read (memory tier) or one GET
(shared backend), not a run through the flows. Which wrapper a function gets is chosen
once, at decoration time (as cachetools builds one wrapper per combination of options):

- memory tier in front, positional call: one lock-free dict read and one clock read;
- shared backend only (sync): one GET, the envelope's expiry read inline; anything else
  (a miss, a stale entry, an early refresh, an undecodable entry, an outage) carries on
  through the flows with the bytes already read, so no call pays a second round trip;
  while the guard skips the backend, straight to the flows' `skipped` (microseconds per
  call during an outage);
- otherwise, and for every miss: the driver's flows.

The async memory hit is the same check as the sync one, through the shared `memory_hit`;
the sync wrapper spells it out inline, which saves a call on the hottest path there is.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from scalepatterns.cache._core import MISSING, Core
from scalepatterns.cache._drivers import AsyncDriver, SyncDriver
from scalepatterns.cache.policy import HEADER, MAGIC
from scalepatterns.errors import SerializationError

__all__ = ["async_wrapper", "sync_wrapper"]


def _fast_lookup(
    core: Core,
) -> tuple[Callable[[object, tuple[Any, ...]], Hashable], Callable[[Hashable], Any]] | None:
    """(key of a positional call, the memory tier's read) when such a call can be answered
    from the memory tier without the flows; else None."""
    fast_key, local = core.fast_key, core.local
    if fast_key is None or local is None or core.options.early_refresh:
        return None
    return fast_key, local.entry


def memory_hit(
    core: Core,
    fast_key: Callable[[object, tuple[Any, ...]], Hashable],
    data_get: Callable[[Hashable], Any],
) -> Callable[[tuple[Any, ...]], Any]:
    """`(args) -> value or MISSING`: a fresh memory-tier entry of a positional call."""
    generation, monotonic, stats, listeners = (
        core.generation,
        core.monotonic,
        core.stats,
        core.listeners,
    )

    def hit(args: tuple[Any, ...]) -> Any:
        try:
            entry = data_get(fast_key(generation.token, args))
        except TypeError:  # an unhashable argument: the flows handle it
            return MISSING
        if entry is not None and entry[1] > monotonic():
            stats.hits += 1
            if listeners.active:
                core.hit_event()
            return entry[0]
        return MISSING

    return hit


def sync_wrapper(core: Core, driver: SyncDriver) -> Callable[..., Any]:
    """The wrapper of a `def` function."""
    call = driver.call
    if core.local is None and driver.backend is not None and core.keys.arity >= 0:
        return _shared_wrapper(core, driver)
    lookup = _fast_lookup(core)
    if lookup is None:

        def generic(*args: Any, **kwargs: Any) -> Any:
            return call(args, kwargs)

        return generic

    fast_key, data_get = lookup
    arity = core.keys.arity
    generation, monotonic, stats, listeners = (
        core.generation,
        core.monotonic,
        core.stats,
        core.listeners,
    )

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not kwargs and len(args) == arity:
            try:
                entry = data_get(fast_key(generation.token, args))
            except TypeError:  # an unhashable argument: the flows handle it
                entry = None
            if entry is not None and entry[1] > monotonic():
                stats.hits += 1
                if listeners.active:
                    core.hit_event()
                return entry[0]
        return call(args, kwargs)

    return wrapper


def _shared_wrapper(core: Core, driver: SyncDriver) -> Callable[..., Any]:
    call, after_get, skipped = driver.call, driver.after_get, driver.skipped
    namespace = core.namespace
    keys, guard, stats, listeners = core.keys, namespace.guard, core.stats, core.listeners
    get = driver.backend.get
    name = driver.flows.name
    arity, skip = keys.arity, keys.skip_first
    shared, head, wall = keys.shared, namespace.head, core.wall
    loads = core.serializer.loads
    plain = core.options.plain and not namespace.plain_values
    magic, header, start = MAGIC, HEADER, len(MAGIC)
    offset = start + HEADER.size

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs or len(args) != arity:
            return call(args, kwargs)
        if guard.is_open:
            return skipped(args) if guard.retry_after() > 0.0 else call(args, kwargs)
        skey = shared(args[1:] if skip else args, head())
        try:
            data = get(skey)
        except Exception as exc:  # noqa: BLE001 - a failing backend: fail open
            core.backend_failed("get", exc, name)
            data = None
        else:
            guard.record_success()
            if plain and data is not None and data[:start] == magic and len(data) >= offset:
                fresh_until = header.unpack_from(data, start)[0]
                if fresh_until > wall():
                    try:
                        value = loads(data[offset:])
                    except SerializationError:
                        pass
                    else:
                        stats.hits += 1
                        if listeners.active:
                            core.hit_event()
                        return value
        return after_get(skey, data, args, kwargs)

    return wrapper


def async_wrapper(core: Core, driver: AsyncDriver) -> Callable[..., Any]:
    """The wrapper of an `async def` function."""
    call = driver.call
    lookup = _fast_lookup(core)
    if lookup is None:

        async def generic(*args: Any, **kwargs: Any) -> Any:
            return await call(args, kwargs)

        return generic

    arity = core.keys.arity
    hit = memory_hit(core, *lookup)

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not kwargs and len(args) == arity:
            value = hit(args)
            if value is not MISSING:
                return value
        return await call(args, kwargs)

    return wrapper
