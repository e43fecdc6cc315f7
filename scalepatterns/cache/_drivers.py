"""The two executors of a cached function's flows (`_flows.py`).

`SyncDriver` runs them with plain calls, `AsyncDriver` with awaits; what differs between
the two is only how they wait: single-flight by threads or by tasks, background refreshes
on the refresh pool or as tasks, `clock.sleep` or `clock.asleep`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from scalepatterns._steps import Flow, adrive, drive
from scalepatterns.cache._core import Core
from scalepatterns.cache._flows import IO, Flows
from scalepatterns.cache.backend import (
    AsyncLockingBackend,
    AsyncTaggingBackend,
    LockingBackend,
    TaggingBackend,
)
from scalepatterns.cache.flight import AsyncSingleFlight, SingleFlight

__all__ = ["AsyncDriver", "SyncDriver"]


class SyncDriver:
    """Runs a `def` function through the cache."""

    def __init__(self, core: Core, backend: Any) -> None:
        self.core = core
        self.backend = backend
        self.flight: SingleFlight[Any] = SingleFlight()
        self._queued: set[Hashable] = set()  # keys with a background refresh submitted
        self._queued_lock = threading.Lock()
        io = IO(
            head=core.namespace.head,
            flight=self._flight,
            background=self._background,
            sleep=core.clock.sleep,
        )
        self.flows = Flows(
            core,
            backend,
            io,
            locking=backend is not None
            and core.options.lock
            and isinstance(backend, LockingBackend),
            tagging=backend is not None and isinstance(backend, TaggingBackend),
        )

    def _flight(self, key: Hashable, flow: Flow[Any]) -> Any:
        return self.flight.do(key, lambda: drive(flow))

    def _background(self, key: Hashable, flow: Flow[Any]) -> None:
        # Claimed at submit: a refresh waiting for a pool thread is not in flight yet, and
        # every stale hit meanwhile would queue another load of the same key.
        with self._queued_lock:
            if key in self._queued or self.flight.in_flight(key):
                return
            self._queued.add(key)

        def refresh() -> None:
            try:
                with contextlib.suppress(Exception):
                    self.flight.do(key, lambda: drive(flow))
            finally:
                with self._queued_lock:
                    self._queued.discard(key)

        try:
            self.core.namespace.refreshes.submit(refresh)
        except BaseException:
            with self._queued_lock:
                self._queued.discard(key)
            raise

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return drive(self.flows.call(args, kwargs))

    def after_get(
        self, skey: str, data: bytes | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Carry on from the shared backend's answer (no memory tier): the hit path's exit."""
        return drive(self.flows.after_get(skey, data, None, None, args, kwargs))

    def skipped(self, args: tuple[Any, ...]) -> Any:
        """A positional call while the guard skips the backend (no memory tier): the hit
        path's other exit, keyed without binding the arguments."""
        core = self.core
        fast_key = core.fast_key
        try:
            key = fast_key(core.generation.token, args) if fast_key is not None else None
            hash(key)
        except TypeError:
            key = None
        return drive(self.flows.skipped(key, None, None, args, {}))

    def invalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        drive(self.flows.invalidate(args, kwargs))

    def refresh(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return drive(self.flows.refresh(args, kwargs))

    def get_many(self, items: Iterable[Any]) -> list[Any]:
        return drive(self.flows.get_many(items))


class _Awaiting:
    """A sync backend behind awaits, for an `async def` function on a sync backend (each
    call blocks the event loop for its round trip, as the guide says)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.name = getattr(backend, "name", type(backend).__name__)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._backend, name)

        async def call(*args: Any) -> Any:
            return method(*args)

        setattr(self, name, call)  # made once per method
        return call


class AsyncDriver:
    """Runs an `async def` function through the cache; the backend may be sync or async."""

    def __init__(self, core: Core, backend: Any, is_async: bool) -> None:
        self.core = core
        self.backend = backend
        self.flight: AsyncSingleFlight[Any] = AsyncSingleFlight()
        self._tasks: set[asyncio.Task[Any]] = set()  # background refreshes under way
        lockable = AsyncLockingBackend if is_async else LockingBackend
        taggable = AsyncTaggingBackend if is_async else TaggingBackend
        io = IO(
            head=core.namespace.ahead,
            flight=self._flight,
            background=self._background,
            sleep=core.clock.asleep,
        )
        self.flows = Flows(
            core,
            backend if is_async or backend is None else _Awaiting(backend),
            io,
            locking=backend is not None and core.options.lock and isinstance(backend, lockable),
            tagging=backend is not None and isinstance(backend, taggable),
        )

    def _flight(self, key: Hashable, flow: Flow[Any]) -> Any:
        return self.flight.do(key, lambda: adrive(flow))

    async def _background(self, key: Hashable, flow: Flow[Any]) -> None:
        if self.flight.in_flight(key):
            return
        task = self.flight.start(key, lambda: adrive(flow))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return await adrive(self.flows.call(args, kwargs))

    async def invalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        await adrive(self.flows.invalidate(args, kwargs))

    async def refresh(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return await adrive(self.flows.refresh(args, kwargs))

    async def get_many(self, items: Iterable[Any]) -> list[Any]:
        return await adrive(self.flows.get_many(items))
