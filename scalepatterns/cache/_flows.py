"""Every decision of a cached function, written once as flows of I/O steps.

A call, a load under the cross-process lock, a background refresh, a store, an
invalidation, a batch read: each is a generator (see `_steps`) that decides from the
memory tier, the bytes the shared backend answered and the clock, and yields the I/O it
needs: a backend command (behind the outage guard), a run of the function, a wait, or one
of the `IO` operations its driver provides. The sync driver runs these flows with plain
calls, the async driver with awaits (`_drivers.py`); neither decides anything.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from scalepatterns._steps import Flow
from scalepatterns.cache._core import MISSING, Core
from scalepatterns.cache._namespace import guarded
from scalepatterns.cache.policy import Freshness, classify
from scalepatterns.errors import SerializationError

__all__ = ["Flows", "IO"]


@dataclass(frozen=True, slots=True)
class IO:
    """What a driver does for the flows; each is a step function, plain for the sync
    driver, returning an awaitable for the async one."""

    head: Callable[[], Any]
    """The namespace's ``namespace[@version]:`` (may read the backend)."""
    flight: Callable[[Hashable, Flow[Any]], Any]
    """Run a flow once per key at a time; concurrent callers share its outcome."""
    background: Callable[[Hashable, Flow[Any]], Any]
    """Start a flow in the background (a refresh) unless one runs for the key."""
    sleep: Callable[[float], Any]
    """Pause, while another process holds the load lock."""


class _Batch:
    __slots__ = ("calls", "keys", "pending", "results", "skeys")

    def __init__(self, calls: list[tuple[Any, ...]]) -> None:
        self.calls = calls
        self.results: list[Any] = [MISSING] * len(calls)
        self.keys: list[tuple[Any, Hashable]] = []
        self.pending: list[int] = []
        self.skeys: dict[int, str] = {}


class Flows:
    """The flows of one cached function over `backend` (None: memory only).

    Args:
        core: the function's state.
        backend: the shared backend, awaitable for an async driver.
        io: the driver's operations.
        locking: load missing keys under the backend's lock.
        tagging: the backend keeps tag sets.
    """

    def __init__(self, core: Core, backend: Any, io: IO, *, locking: bool, tagging: bool) -> None:
        self.core = core
        self.backend = backend
        self.io = io
        self.locking = locking
        self.tagging = tagging
        self.options = core.options
        self.local = core.local
        self.guard = core.namespace.guard
        self.name = getattr(backend, "name", type(backend).__name__)
        fn = core.fn
        self.run_function: Callable[[tuple[Any, ...], dict[str, Any]], Any] = lambda args, kwargs: (
            fn(*args, **kwargs)
        )

    # -- what every flow needs -------------------------------------------------------------

    def down(self) -> bool:
        """True while the guard skips the backend (without taking the one probe)."""
        guard = self.guard
        return guard.is_open and guard.retry_after() > 0.0

    def op(
        self, operation: str, method: Callable[..., Any], *args: Any, default: Any = None
    ) -> Flow[Any]:
        """A backend command behind the outage guard; `default` when skipped or failed."""
        return guarded(self.guard, self._failed, operation, method, args, default)

    def _failed(self, operation: str, exc: Exception) -> None:
        self.core.backend_failed(operation, exc, self.name)

    def keys_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Hashable]:
        """(bound values, in-process key: the memory-tier key, and the single-flight key
        while the backend is skipped). Without a backend the shared key stands in for an
        unhashable local one."""
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
        key = core.local_key(values)
        if self.backend is None and key is None:  # unhashable: the text key, this function's
            return values, (core.generation.token, core.keys.shared(values, core.namespace.head()))
        return values, key

    def local_lookup(self, lkey: Hashable) -> tuple[Any, Any, bool]:
        """(value or MISSING, stale entry or None, refresh wanted) from the memory tier."""
        core = self.core
        entry = self.local.entry(lkey) if self.local is not None else None
        if entry is None:
            return MISSING, None, False
        now = core.monotonic()
        if self.backend is not None:  # a two-tier copy: fresh or gone, Redis keeps the rest
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

    def judge_shared(
        self, data: bytes | None, skey: str
    ) -> Flow[tuple[Any, Any, bool, float | None]]:
        """(value or MISSING, stale entry or None, refresh wanted, seconds left or None)
        for the bytes the backend holds under `skey`; an undecodable entry is deleted."""
        if data is None:
            return MISSING, None, False, None
        core = self.core
        try:
            value, fresh, delta = core.decode(data)
        except SerializationError as exc:
            core.backend_failed("decode", exc, self.name)
            yield from self.op("delete", self.backend.delete, skey)
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

    # -- a call ----------------------------------------------------------------------------

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Flow[Any]:
        """A call of the function through the cache."""
        core = self.core
        values, key = self.keys_for(args, kwargs)
        lkey = key if self.local is not None else None
        stale = None
        if lkey is not None:
            value, stale, refresh = self.local_lookup(lkey)
            if value is not MISSING:
                if refresh:
                    refreshing = self.load_early(lkey, None, args, kwargs, None)
                    yield self.io.background, (lkey, refreshing)
                return value
        if self.backend is None or self.down():
            return (yield from self.skipped(key, lkey, stale, args, kwargs))
        skey = core.keys.shared(values, (yield self.io.head, ()))
        data = yield from self.op("get", self.backend.get, skey)
        return (yield from self.after_get(skey, data, lkey, stale, args, kwargs))

    def skipped(
        self,
        key: Hashable,
        lkey: Hashable,
        stale: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Flow[Any]:
        """A call the shared backend cannot answer (none, or skipped by the guard): a
        miss, loaded once per in-process `key` at a time (None: unhashable, not shared)."""
        self.core.miss()
        load = self.load(lkey, None, args, kwargs, stale, early=False)
        if key is None:
            return (yield from load)
        return (yield self.io.flight, (key, load))

    def after_get(  # noqa: PLR0917 - internal
        self,
        skey: str,
        data: bytes | None,
        lkey: Hashable,
        stale: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Flow[Any]:
        """Carry on from the shared backend's answer `data` for `skey`."""
        core = self.core
        value, stale_shared, refresh, left = yield from self.judge_shared(data, skey)
        if value is not MISSING:
            if lkey is not None and left is not None:
                core.local_put(lkey, value, left, 0.0, skey)
            if refresh:
                yield self.io.background, (skey, self.load_early(lkey, skey, args, kwargs, data))
            return value
        if stale_shared is not None:
            stale = stale_shared
        core.miss()
        return (yield self.io.flight, (skey, self.load_locked(lkey, skey, args, kwargs, stale)))

    def fresh_shared(self, skey: str) -> Flow[Any]:
        """The backend's usable value for `skey`, or MISSING."""
        data = yield from self.op("get", self.backend.get, skey)
        value, _, _, _ = yield from self.judge_shared(data, skey)
        return value

    # -- loading ---------------------------------------------------------------------------

    def load_early(
        self,
        lkey: Hashable,
        skey: str | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        seen: bytes | None,
    ) -> Flow[None]:
        """A background refresh of the entry `seen`. With a shared lock, only the process
        that takes it loads, and none once another has stored a new entry."""
        if not self.locking or skey is None:
            yield from self.load(lkey, skey, args, kwargs, None, early=True)
            return
        opts = self.options
        token = self.core.lock_token()
        lock_key = skey + "|lock"
        got = yield from self.op("lock", self.backend.acquire_lock, lock_key, token, opts.lock_ttl)
        if got is False:
            return  # another process is loading it; its value will be stored
        try:
            data = yield from self.op("get", self.backend.get, skey)
            if data is None or data == seen:  # not refreshed by another process meanwhile
                yield from self.load(lkey, skey, args, kwargs, None, early=True)
        finally:
            if got:
                yield from self.op("unlock", self.backend.release_lock, lock_key, token)

    def load_locked(
        self, lkey: Hashable, skey: str, args: tuple[Any, ...], kwargs: dict[str, Any], stale: Any
    ) -> Flow[Any]:
        """Load a missing key; with a shared lock, one process loads while the others
        wait for its value (or for its lock to go, and take over)."""
        if not self.locking:
            return (yield from self.load(lkey, skey, args, kwargs, stale, early=False))
        core, opts = self.core, self.options
        token = core.lock_token()
        lock_key = skey + "|lock"
        deadline = core.monotonic() + opts.lock_wait
        pause = 0.005
        while True:
            got = yield from self.op(
                "lock", self.backend.acquire_lock, lock_key, token, opts.lock_ttl
            )
            if got:
                try:
                    # Another process may have stored the value before we got the lock.
                    value = yield from self.fresh_shared(skey)
                    if value is not MISSING:
                        return value
                    return (yield from self.load(lkey, skey, args, kwargs, stale, early=False))
                finally:
                    yield from self.op("unlock", self.backend.release_lock, lock_key, token)
            if got is not False or core.monotonic() >= deadline or self.down():
                # No lock to be had (backend failing), or waited long enough: load.
                return (yield from self.load(lkey, skey, args, kwargs, stale, early=False))
            # Another process loads: wait for its value, or for its lock to go (it
            # failed or stored nothing) and take over.
            yield self.io.sleep, (pause,)
            pause = min(pause * 2, 0.1)
            value = yield from self.fresh_shared(skey)
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
    ) -> Flow[Any]:
        """Run the function and store its result; on an error, serve `stale` if given."""
        core = self.core
        start = core.monotonic()
        try:
            value = yield self.run_function, (args, kwargs)
        except Exception as exc:
            core.load_failed(exc)
            if stale is not None:
                core.stale("error")
                return stale[0]
            raise
        delta = core.monotonic() - start
        core.loaded(delta, early)
        if skey is not None or self.local is not None:
            yield from self.store(lkey, skey, value, delta, args, kwargs)
        return value

    def store(  # noqa: PLR0917 - internal, mirrors load()
        self,
        lkey: Hashable,
        skey: str | None,
        value: Any,
        delta: float,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Flow[None]:
        """Store `value` in the memory tier and the shared backend, with its tags."""
        core = self.core
        if not core.should_store(value):
            return
        ttl = core.ttl_for(value)
        tags = self.tags_for(args, kwargs)
        # Encode first: an unserializable result raises before anything is stored.
        data = core.encode(value, ttl, delta) if skey is not None else b""
        if lkey is not None:
            core.local_put(lkey, value, ttl, delta, skey)
            if tags:
                core.namespace.index.tag(lkey, tags)
        if skey is not None:
            backend_ttl = core.backend_ttl(ttl)
            yield from self.op("set", self.backend.set, skey, data, backend_ttl)
            if tags and self.tagging:
                yield from self.op("tag", self.backend.tag, skey, tags, backend_ttl)

    def tags_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        tags = self.options.tags
        if tags is None:
            return []
        return [self.core.namespace.tag_key(t) for t in tags(*args, **kwargs)]

    # -- the wrapper's other methods -------------------------------------------------------

    def with_self(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        # `obj.method.invalidate(x)` reaches us without `self`, which keys leave out anyway.
        return (None, *args) if self.core.keys.skip_first else args

    def invalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Flow[None]:
        """Drop the entry of this call from every tier (other processes' memory tiers
        through pub/sub); kept for later while the backend is unreachable."""
        core = self.core
        values, key = self.keys_for(self.with_self(args), kwargs)
        if self.local is not None and key is not None:
            self.local.pop(key)
        if self.backend is None:
            return
        skey = core.keys.shared(values, (yield self.io.head, ()))
        if (yield from self.op("delete", self.backend.delete, skey)) is None:
            core.namespace.defer(keys=(skey,))  # the backend is away: sent when it answers
        else:
            core.namespace.publish_keys([skey])

    def refresh(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Flow[Any]:
        """Call the function now and store its result."""
        core = self.core
        values, key = self.keys_for(args, kwargs)
        lkey = key if self.local is not None else None
        skey = None
        if self.backend is not None and not self.down():
            skey = core.keys.shared(values, (yield self.io.head, ()))
        load = self.load(lkey, skey, args, kwargs, None, early=False)
        fkey = skey if skey is not None else key
        if fkey is None:
            return (yield from load)
        return (yield self.io.flight, (fkey, load))

    def get_many(self, items: Iterable[Any]) -> Flow[list[Any]]:
        """Results for many calls: what the memory tier holds, one batch read of the
        backend for the rest, loads for the misses only."""
        core = self.core
        keys = core.keys
        single = keys.key_params == 1 and not keys.skip_first
        batch = _Batch([(item,) if single else tuple(item) for item in items])
        batch.keys = [self.keys_for(args, {}) for args in batch.calls]
        for i, (_, key) in enumerate(batch.keys):
            if key is not None and self.local is not None:
                value, _, _ = self.local_lookup(key)
                if value is not MISSING:
                    batch.results[i] = value
                    continue
            batch.pending.append(i)
        if batch.pending and self.backend is not None and not self.down():
            head = yield self.io.head, ()
            batch.skeys = {i: keys.shared(batch.keys[i][0], head) for i in batch.pending}
            datas = yield from self.op(
                "get_many", self.backend.get_many, list(batch.skeys.values())
            )
            if datas is not None:
                yield from self._batch_hits(batch, datas)
        misses = [i for i in batch.pending if batch.results[i] is MISSING]
        for _ in misses:
            core.miss()
        for i in misses:
            key, skey = batch.keys[i][1], batch.skeys.get(i)
            lkey = key if self.local is not None else None
            load = self.load(lkey, skey, batch.calls[i], {}, None, early=False)
            fkey = skey if skey is not None else key
            if fkey is None:
                batch.results[i] = yield from load
            else:
                batch.results[i] = yield self.io.flight, (fkey, load)
        return batch.results

    def _batch_hits(self, batch: _Batch, datas: list[bytes | None]) -> Flow[None]:
        core = self.core
        for (i, skey), data in zip(batch.skeys.items(), datas, strict=True):
            value, _, _, left = yield from self.judge_shared(data, skey)
            if value is not MISSING:
                batch.results[i] = value
                lkey = batch.keys[i][1]
                if self.local is not None and lkey is not None and left is not None:
                    core.local_put(lkey, value, left, 0.0, skey)
