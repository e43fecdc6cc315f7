"""The sync and async drivers of a cached function: they carry out `_core` decisions.

The two classes mirror each other method for method; only the awaiting differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from scalepatterns.cache._core import MISSING, Core
from scalepatterns.cache.backend import (
    AsyncLockingBackend,
    AsyncTaggingBackend,
    LockingBackend,
    TaggingBackend,
)
from scalepatterns.cache.flight import AsyncSingleFlight, SingleFlight
from scalepatterns.cache.policy import Freshness, classify
from scalepatterns.errors import SerializationError

__all__ = ["AsyncDriver", "SyncDriver"]


def _as_args(core: Core, item: Any) -> tuple[Any, ...]:
    if core.keys.key_params == 1 and not core.keys.skip_first:
        return (item,)
    return tuple(item)


class _Batch:
    __slots__ = ("calls", "keys", "pending", "results", "skeys")

    def __init__(self, calls: list[tuple[Any, ...]]) -> None:
        self.calls = calls
        self.results: list[Any] = [MISSING] * len(calls)
        self.keys: list[tuple[Any, Hashable]] = []
        self.pending: list[int] = []
        self.skeys: dict[int, str] = {}


class _Base:
    def __init__(self, core: Core, backend: Any) -> None:
        self.core = core
        self.backend = backend
        self.guard = core.cache.guard
        self.options = core.options
        self.name = getattr(backend, "name", type(backend).__name__)

    def down(self) -> bool:
        """True while the breaker skips the backend (without taking the one probe)."""
        guard = self.guard
        return guard.is_open and guard.retry_after() > 0.0

    def local_lookup(self, lkey: Hashable, shared: bool) -> tuple[Any, Any, bool]:
        """(value or MISSING, stale entry or None, refresh wanted)."""
        core = self.core
        local = core.local
        entry = local._data.get(lkey) if local is not None else None
        if entry is None:
            return MISSING, None, False
        now = core.monotonic()
        if shared:
            if now < entry[1]:
                core.hit()
                return entry[0], None, False
            return MISSING, None, False
        opts = self.options
        state = classify(
            now, entry[1], entry[1] + opts.stale_ttl, entry[3], opts.early_refresh, core.random()
        )
        if state is Freshness.FRESH:
            core.hit()
            return entry[0], None, False
        if state is Freshness.EARLY:
            core.hit()
            return entry[0], None, True
        if state is Freshness.STALE:
            core.stale("revalidate")
            return entry[0], None, True
        if now < entry[1] + opts.stale_if_error:
            return MISSING, entry, False
        return MISSING, None, False

    def judge_shared(self, data: bytes | None, skey: str) -> tuple[Any, Any, bool, float | None]:
        """(value or MISSING, stale entry or None, refresh wanted, seconds left or None)."""
        if data is None:
            return MISSING, None, False, None
        core = self.core
        try:
            value, fresh, delta = core.decode(data)
        except SerializationError as exc:
            core.backend_failed("decode", exc, self.name)
            self.drop_undecodable(skey)
            return MISSING, None, False, None
        opts = self.options
        now = core.wall()
        state = classify(
            now, fresh, fresh + opts.stale_ttl, delta, opts.early_refresh, core.random()
        )
        if state is Freshness.FRESH or state is Freshness.EARLY:
            core.hit()
            return value, None, state is Freshness.EARLY, fresh - now
        if state is Freshness.STALE:
            core.stale("revalidate")
            return value, None, True, None
        if now < fresh + opts.stale_if_error:
            return MISSING, (value, fresh, fresh, delta), False, None
        return MISSING, None, False, None

    def drop_undecodable(self, skey: str) -> None:
        raise NotImplementedError

    def keys_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Hashable]:
        """(bound values, local/flight key); without a backend the shared key stands in
        for a missing local one."""
        core = self.core
        try:
            values = core.keys.bind(args, kwargs)
        except TypeError as exc:
            if not core.keys.skip_first:
                raise
            # `obj.method.refresh(x)` arrives without `obj`: the loader needs it.
            raise TypeError(
                f"{exc}; a cached method's refresh() and get_many() take the instance "
                f"first: {core.function}.refresh(obj, ...), get_many([(obj, ...), ...])"
            ) from exc
        lkey = core.local_key(values)
        if self.backend is None and lkey is None:  # unhashable: the text key, this function's
            return values, (core.token, core.shared_key(values))
        return values, lkey

    def batch_begin(self, items: Iterable[Any]) -> _Batch:
        """Bind every call and answer what the local tier can."""
        core = self.core
        batch = _Batch([_as_args(core, item) for item in items])
        batch.keys = [self.keys_for(args, {}) for args in batch.calls]
        for i, (_, lkey) in enumerate(batch.keys):
            if lkey is not None and core.local is not None:
                value, _, _ = self.local_lookup(lkey, self.backend is not None)
                if value is not MISSING:
                    batch.results[i] = value
                    continue
            batch.pending.append(i)
        return batch

    def batch_hits(self, batch: _Batch, datas: list[bytes | None] | None) -> None:
        """Apply one batch read of the shared backend."""
        if datas is None:
            return
        core = self.core
        for (i, skey), data in zip(batch.skeys.items(), datas, strict=True):
            value, _, _, left = self.judge_shared(data, skey)
            if value is not MISSING:
                batch.results[i] = value
                lkey = batch.keys[i][1]
                if lkey is not None and left is not None:
                    core.local_put(lkey, value, left, 0.0, skey)

    def batch_misses(self, batch: _Batch) -> list[tuple[int, Hashable, Callable[[], Any]]]:
        """(index, flight key or None, the load) for every call still unanswered."""
        misses: list[tuple[int, Hashable, Callable[[], Any]]] = []
        for i in batch.pending:
            if batch.results[i] is MISSING:
                self.core.miss()
                lkey, skey = batch.keys[i][1], batch.skeys.get(i)
                load = functools.partial(
                    self.load, lkey, skey, batch.calls[i], {}, None, early=False
                )
                misses.append((i, skey if skey is not None else lkey, load))
        return misses

    def load(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def plan_store(  # noqa: PLR0917 - internal, mirrors store()
        self,
        lkey: Hashable,
        skey: str | None,
        value: Any,
        delta: float,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[bytes, float | None, list[str]] | None:
        """Store `value` in the local tier; return what the shared backend should get
        (encoded entry, backend TTL, tags), or None when nothing goes there."""
        core = self.core
        if (skey is None and core.local is None) or not core.should_store(value):
            return None
        ttl = core.ttl_for(value)
        tags = self.tags_for(args, kwargs)
        # Encode first: an unserializable result raises before anything is stored.
        data = core.encode(value, ttl, delta) if skey is not None else b""
        if lkey is not None:
            core.local_put(lkey, value, ttl, delta, skey)
            if tags:
                core.cache.tag_local(lkey, tags)
        return data, core.backend_ttl(ttl), tags

    def tags_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        tags = self.options.tags
        if tags is None:
            return []
        return [self.core.cache.tag_key(t) for t in tags(*args, **kwargs)]


class SyncDriver(_Base):
    """Runs a sync function through the cache."""

    def __init__(self, core: Core, backend: Any) -> None:
        super().__init__(core, backend)
        self.flight: SingleFlight[Any] = SingleFlight()
        self._queued: set[Hashable] = set()  # keys with a background refresh submitted
        self._queued_lock = threading.Lock()
        self.locking = (
            backend is not None and core.options.lock and isinstance(backend, LockingBackend)
        )
        self.tagging = backend is not None and isinstance(backend, TaggingBackend)

    def op(
        self, operation: str, method: Callable[..., Any], *args: Any, default: Any = None
    ) -> Any:
        if not self.guard.allow():
            return default
        try:
            result = method(*args)
        except Exception as exc:  # noqa: BLE001 - any backend failure means: go on without it
            self.core.backend_failed(operation, exc, self.name)
            return default
        self.guard.record_success()
        return result

    def drop_undecodable(self, skey: str) -> None:
        self.op("delete", self.backend.delete, skey)

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        core = self.core
        skip_backend = self.backend is None or self.down()
        if core.local is None and not skip_backend:
            # Shared backend only, healthy: no local key needed.
            return self.call_shared(core.keys.bind(args, kwargs), None, None, args, kwargs)
        values, lkey = self.keys_for(args, kwargs)
        stale = None
        if lkey is not None and core.local is not None:
            value, stale, refresh = self.local_lookup(lkey, self.backend is not None)
            if value is not MISSING:
                if refresh:
                    self.background(lkey, lkey, args, kwargs)
                return value
        if skip_backend:
            core.miss()
            if lkey is None:
                return self.load(None, None, args, kwargs, stale, early=False)
            return self.flight.do(
                lkey, lambda: self.load(lkey, None, args, kwargs, stale, early=False)
            )
        return self.call_shared(values, lkey, stale, args, kwargs)

    def call_skipped(self, args: tuple[Any, ...]) -> Any:
        """A positional call while the breaker skips the shared backend (no local tier):
        concurrent identical calls still share one run of the function."""
        core = self.core
        core.miss()
        fast_key = core.fast_key
        try:
            key = fast_key(core.token, args) if fast_key is not None else None
            hash(key)
        except TypeError:
            key = None
        if key is None:
            return self.load(None, None, args, {}, None, early=False)
        return self.flight.do(key, lambda: self.load(None, None, args, {}, None, early=False))

    def call_shared(
        self,
        values: tuple[Any, ...],
        lkey: Hashable,
        stale: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        skey = self.core.shared_key(values)
        data = self.op("get", self.backend.get, skey)
        return self.after_get(skey, data, lkey, stale, args, kwargs)

    def after_get(  # noqa: PLR0917 - internal
        self,
        skey: str,
        data: bytes | None,
        lkey: Hashable,
        stale: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Carry on from the shared backend's answer `data` for `skey`."""
        core = self.core
        value, stale_shared, refresh, left = self.judge_shared(data, skey)
        if value is not MISSING:
            if lkey is not None and left is not None:
                core.local_put(lkey, value, left, 0.0, skey)
            if refresh:
                self.background(skey, lkey, args, kwargs, skey, seen=data)
            return value
        stale = stale_shared if stale_shared is not None else stale
        core.miss()
        return self.flight.do(skey, lambda: self.load_locked(lkey, skey, args, kwargs, stale))

    def fresh_shared(self, skey: str) -> Any:
        data = self.op("get", self.backend.get, skey)
        value, _, _, _ = self.judge_shared(data, skey)
        return value

    def load_early(
        self,
        lkey: Hashable,
        skey: str | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        seen: bytes | None,
    ) -> None:
        """A background refresh of the entry `seen`. With a shared lock, only the process
        that takes it loads, and none once another has stored a new entry."""
        if not self.locking or skey is None:
            self.load(lkey, skey, args, kwargs, None, early=True)
            return
        core, opts = self.core, self.options
        token = core.lock_token()
        lock_key = skey + "|lock"
        got = self.op("lock", self.backend.acquire_lock, lock_key, token, opts.lock_ttl)
        if got is False:
            return  # another process is loading it; its value will be stored
        try:
            data = self.op("get", self.backend.get, skey)
            if data is None or data == seen:  # not refreshed by another process meanwhile
                self.load(lkey, skey, args, kwargs, None, early=True)
        finally:
            if got:
                self.op("unlock", self.backend.release_lock, lock_key, token)

    def load_locked(
        self, lkey: Hashable, skey: str, args: tuple[Any, ...], kwargs: dict[str, Any], stale: Any
    ) -> Any:
        if not self.locking:
            return self.load(lkey, skey, args, kwargs, stale, early=False)
        core, opts = self.core, self.options
        token = core.lock_token()
        lock_key = skey + "|lock"
        deadline = core.monotonic() + opts.lock_wait
        pause = 0.005
        while True:
            got = self.op("lock", self.backend.acquire_lock, lock_key, token, opts.lock_ttl)
            if got:
                try:
                    # Another process may have stored the value before we got the lock.
                    value = self.fresh_shared(skey)
                    if value is not MISSING:
                        return value
                    return self.load(lkey, skey, args, kwargs, stale, early=False)
                finally:
                    self.op("unlock", self.backend.release_lock, lock_key, token)
            if got is not False or core.monotonic() >= deadline or self.down():
                # No lock to be had (backend failing), or waited long enough: load.
                return self.load(lkey, skey, args, kwargs, stale, early=False)
            # Another process loads: wait for its value, or for its lock to go (it
            # failed or stored nothing) and take over.
            core.clock.sleep(pause)
            pause = min(pause * 2, 0.1)
            value = self.fresh_shared(skey)
            if value is not MISSING:
                return value

    def load(
        self,
        lkey: Hashable,
        skey: str | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        stale: Any,
        *,
        early: bool,
    ) -> Any:
        core = self.core
        start = core.monotonic()
        try:
            value = core.fn(*args, **kwargs)
        except Exception as exc:
            core.load_failed(exc)
            if stale is not None:
                core.stale("error")
                return stale[0]
            raise
        delta = core.monotonic() - start
        core.loaded(delta, early)
        self.store(lkey, skey, value, delta, args, kwargs)
        return value

    def store(  # noqa: PLR0917 - internal, mirrors load()
        self,
        lkey: Hashable,
        skey: str | None,
        value: Any,
        delta: float,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        plan = self.plan_store(lkey, skey, value, delta, args, kwargs)
        if plan is not None and skey is not None:
            data, ttl, tags = plan
            self.op("set", self.backend.set, skey, data, ttl)
            if tags and self.tagging:
                self.op("tag", self.backend.tag, skey, tags, ttl)

    def background(
        self,
        fkey: Hashable,
        lkey: Hashable,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        skey: str | None = None,
        *,
        seen: bytes | None = None,
    ) -> None:
        # Claimed at submit: a refresh waiting for a pool thread is not in flight yet, and
        # every stale hit meanwhile would queue another load of the same key.
        with self._queued_lock:
            if fkey in self._queued or self.flight.in_flight(fkey):
                return
            self._queued.add(fkey)

        def refresh() -> None:
            try:
                with contextlib.suppress(Exception):
                    self.flight.do(fkey, lambda: self.load_early(lkey, skey, args, kwargs, seen))
            finally:
                with self._queued_lock:
                    self._queued.discard(fkey)

        try:
            self.core.cache.submit(refresh)
        except BaseException:
            with self._queued_lock:
                self._queued.discard(fkey)
            raise

    def invalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        core = self.core
        args = self.with_self(args, kwargs)
        values, lkey = self.keys_for(args, kwargs)
        if core.local is not None and lkey is not None:
            core.local.pop(lkey)
        if self.backend is not None:
            skey = core.shared_key(values)
            if self.op("delete", self.backend.delete, skey) is None:
                core.cache.defer(keys=(skey,))  # Redis away: sent when it answers
            else:
                core.cache.publish_keys([skey])

    def with_self(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        # `obj.method.invalidate(x)` reaches us without `self`, which keys leave out anyway.
        if self.core.keys.skip_first:
            return (None, *args)
        return args

    def refresh(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        core = self.core
        values, lkey = self.keys_for(args, kwargs)
        skey = core.shared_key(values) if self.backend is not None and not self.down() else None
        fkey = skey if skey is not None else lkey
        if fkey is None:
            return self.load(None, None, args, kwargs, None, early=False)
        return self.flight.do(fkey, lambda: self.load(lkey, skey, args, kwargs, None, early=False))

    def get_many(self, items: Iterable[Any]) -> list[Any]:
        batch = self.batch_begin(items)
        if batch.pending and self.backend is not None and not self.down():
            batch.skeys = {i: self.core.shared_key(batch.keys[i][0]) for i in batch.pending}
            datas = self.op("get_many", self.backend.get_many, list(batch.skeys.values()))
            self.batch_hits(batch, datas)
        for i, fkey, load in self.batch_misses(batch):
            batch.results[i] = load() if fkey is None else self.flight.do(fkey, load)
        return batch.results


class AsyncDriver(_Base):
    """Runs an `async def` function through the cache; the backend may be sync or async."""

    def __init__(self, core: Core, backend: Any, is_async: bool) -> None:
        super().__init__(core, backend)
        self.flight: AsyncSingleFlight[Any] = AsyncSingleFlight()
        self.is_async = is_async
        lockable = AsyncLockingBackend if is_async else LockingBackend
        taggable = AsyncTaggingBackend if is_async else TaggingBackend
        self.locking = backend is not None and core.options.lock and isinstance(backend, lockable)
        self.tagging = backend is not None and isinstance(backend, taggable)
        self._background: set[asyncio.Task[Any]] = set()

    async def op(
        self, operation: str, method: Callable[..., Any], *args: Any, default: Any = None
    ) -> Any:
        if not self.guard.allow():
            return default
        try:
            result = method(*args)
            if self.is_async:
                result = await result
        except Exception as exc:  # noqa: BLE001 - any backend failure means: go on without it
            self.core.backend_failed(operation, exc, self.name)
            return default
        self.guard.record_success()
        return result

    def drop_undecodable(self, skey: str) -> None:
        task = asyncio.ensure_future(self.op("delete", self.backend.delete, skey))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        core = self.core
        values, lkey = self.keys_for(args, kwargs)
        stale = None
        if lkey is not None and core.local is not None:
            value, stale, refresh = self.local_lookup(lkey, self.backend is not None)
            if value is not MISSING:
                if refresh:
                    self.background(lkey, lkey, None, args, kwargs)
                return value
        if self.backend is None or self.down():
            core.miss()
            if lkey is None:
                return await self.load(None, None, args, kwargs, stale, early=False)
            return await self.flight.do(
                lkey, lambda: self.load(lkey, None, args, kwargs, stale, early=False)
            )
        skey = await core.cache.ashared_key(core, values)
        data = await self.op("get", self.backend.get, skey)
        value, stale, refresh, left = self.judge_shared(data, skey)
        if value is not MISSING:
            if lkey is not None and left is not None:
                core.local_put(lkey, value, left, 0.0, skey)
            if refresh:
                self.background(skey, lkey, skey, args, kwargs, seen=data)
            return value
        core.miss()
        return await self.flight.do(skey, lambda: self.load_locked(lkey, skey, args, kwargs, stale))

    async def fresh_shared(self, skey: str) -> Any:
        data = await self.op("get", self.backend.get, skey)
        value, _, _, _ = self.judge_shared(data, skey)
        return value

    async def load_early(
        self,
        lkey: Hashable,
        skey: str | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        seen: bytes | None,
    ) -> None:
        """`SyncDriver.load_early` for async functions."""
        if not self.locking or skey is None:
            await self.load(lkey, skey, args, kwargs, None, early=True)
            return
        core, opts = self.core, self.options
        token = core.lock_token()
        lock_key = skey + "|lock"
        got = await self.op("lock", self.backend.acquire_lock, lock_key, token, opts.lock_ttl)
        if got is False:
            return
        try:
            data = await self.op("get", self.backend.get, skey)
            if data is None or data == seen:
                await self.load(lkey, skey, args, kwargs, None, early=True)
        finally:
            if got:
                await self.op("unlock", self.backend.release_lock, lock_key, token)

    async def load_locked(
        self, lkey: Hashable, skey: str, args: tuple[Any, ...], kwargs: dict[str, Any], stale: Any
    ) -> Any:
        if not self.locking:
            return await self.load(lkey, skey, args, kwargs, stale, early=False)
        core, opts = self.core, self.options
        token = core.lock_token()
        lock_key = skey + "|lock"
        deadline = core.monotonic() + opts.lock_wait
        pause = 0.005
        while True:
            got = await self.op("lock", self.backend.acquire_lock, lock_key, token, opts.lock_ttl)
            if got:
                try:
                    value = await self.fresh_shared(skey)
                    if value is not MISSING:
                        return value
                    return await self.load(lkey, skey, args, kwargs, stale, early=False)
                finally:
                    await self.op("unlock", self.backend.release_lock, lock_key, token)
            if got is not False or core.monotonic() >= deadline or self.down():
                return await self.load(lkey, skey, args, kwargs, stale, early=False)
            await core.clock.asleep(pause)
            pause = min(pause * 2, 0.1)
            value = await self.fresh_shared(skey)
            if value is not MISSING:
                return value

    async def load(
        self,
        lkey: Hashable,
        skey: str | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        stale: Any,
        *,
        early: bool,
    ) -> Any:
        core = self.core
        start = core.monotonic()
        try:
            value = await core.fn(*args, **kwargs)
        except Exception as exc:
            core.load_failed(exc)
            if stale is not None:
                core.stale("error")
                return stale[0]
            raise
        delta = core.monotonic() - start
        core.loaded(delta, early)
        await self.store(lkey, skey, value, delta, args, kwargs)
        return value

    async def store(  # noqa: PLR0917 - internal, mirrors load()
        self,
        lkey: Hashable,
        skey: str | None,
        value: Any,
        delta: float,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        plan = self.plan_store(lkey, skey, value, delta, args, kwargs)
        if plan is not None and skey is not None:
            data, ttl, tags = plan
            await self.op("set", self.backend.set, skey, data, ttl)
            if tags and self.tagging:
                await self.op("tag", self.backend.tag, skey, tags, ttl)

    def background(
        self,
        fkey: Hashable,
        lkey: Hashable,
        skey: str | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        seen: bytes | None = None,
    ) -> None:
        if self.flight.in_flight(fkey):
            return
        task = self.flight.start(fkey, lambda: self.load_early(lkey, skey, args, kwargs, seen))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def invalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        core = self.core
        if core.keys.skip_first:
            args = (None, *args)
        values, lkey = self.keys_for(args, kwargs)
        if core.local is not None and lkey is not None:
            core.local.pop(lkey)
        if self.backend is not None:
            skey = await core.cache.ashared_key(core, values)
            if await self.op("delete", self.backend.delete, skey) is None:
                core.cache.defer(keys=(skey,))
            else:
                core.cache.publish_keys([skey])

    async def refresh(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        core = self.core
        values, lkey = self.keys_for(args, kwargs)
        skey = None
        if self.backend is not None and not self.down():
            skey = await core.cache.ashared_key(core, values)
        fkey = skey if skey is not None else lkey
        if fkey is None:
            return await self.load(None, None, args, kwargs, None, early=False)
        return await self.flight.do(
            fkey, lambda: self.load(lkey, skey, args, kwargs, None, early=False)
        )

    async def get_many(self, items: Iterable[Any]) -> list[Any]:
        batch = self.batch_begin(items)
        if batch.pending and self.backend is not None and not self.down():
            cache = self.core.cache
            batch.skeys = {
                i: await cache.ashared_key(self.core, batch.keys[i][0]) for i in batch.pending
            }
            datas = await self.op("get_many", self.backend.get_many, list(batch.skeys.values()))
            self.batch_hits(batch, datas)
        for i, fkey, load in self.batch_misses(batch):
            batch.results[i] = await (load() if fkey is None else self.flight.do(fkey, load))
        return batch.results
