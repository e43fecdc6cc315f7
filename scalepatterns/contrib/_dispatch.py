"""The piece every adapter shares: a listener that dispatches on the event's type."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from scalepatterns.events import Event, Listeners, default_listeners

__all__ = ["Dispatcher", "Handler", "Instrumentation", "block_of", "gather"]

Handler = Callable[[Any], None]
"""Updates a metric, span or log from one event of the type it is registered for."""

_MISSING: Any = object()

T = TypeVar("T")
V = TypeVar("V")


class Dispatcher:
    """A listener that calls the handler registered for ``type(event)``.

    The lookup is one dictionary access. An event whose exact type is not in the table
    (a subclass of a mapped event, or an event nobody maps) is resolved once along its
    MRO and remembered, so it also costs one dictionary access afterwards.
    """

    __slots__ = ("_lock", "_table")

    def __init__(self, table: Mapping[type[Event], Handler]) -> None:
        self._table: dict[type[Any], Handler | None] = dict(table)
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        handler = self._table.get(type(event), _MISSING)
        if handler is _MISSING:
            handler = self._resolve(type(event))
        if handler is not None:
            handler(event)

    def _resolve(self, event_type: type[Event]) -> Handler | None:
        with self._lock:
            found: Handler | None = None
            for base in event_type.__mro__[1:]:
                candidate = self._table.get(base)
                if candidate is not None:
                    found = candidate
                    break
            # Copy-on-write so readers never see a dict resized under them.
            table = dict(self._table)
            table[event_type] = found
            self._table = table
            return found

    @property
    def event_types(self) -> frozenset[type[Event]]:
        """The event types this dispatcher maps (not counting remembered misses)."""
        return frozenset(t for t, h in self._table.items() if h is not None)


class Instrumentation:
    """What ``instrument()`` returns: the registered listener and how to remove it.

    Use ``uninstrument()`` (idempotent), or the instrumentation as a context manager.
    """

    __slots__ = ("_remove", "listener", "listeners", "target")

    def __init__(self, listener: Dispatcher, listeners: Listeners | None, target: object) -> None:
        self.listener = listener
        self.listeners = listeners if listeners is not None else default_listeners
        self.target = target
        self._remove: Callable[[], None] | None = self.listeners.add(listener)

    @property
    def active(self) -> bool:
        """True until `uninstrument()` is called."""
        return self._remove is not None

    def uninstrument(self) -> None:
        """Remove the listener; metrics already recorded stay in their registry."""
        remove, self._remove = self._remove, None
        if remove is not None:
            remove()

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.uninstrument()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"Instrumentation({self.target!r}, {state})"


def block_of(event_type: type[Event]) -> str:
    """The block an event type belongs to: ``"cache"`` for `scalepatterns.cache.events`."""
    parts = event_type.__module__.split(".")
    if len(parts) >= 3 and parts[0] == "scalepatterns":
        return parts[1]
    return parts[0] if parts[0] != "scalepatterns" else "core"


def gather(
    builders: Iterable[tuple[str, Callable[[T], Mapping[type[Event], V]]]], tools: T
) -> dict[type[Event], V]:
    """Merge the per-block tables, skipping blocks whose package cannot be imported.

    A block's package may need a driver (the router imports SQLAlchemy): when it is not
    installed, none of that block's components can exist, so none of its events can be
    emitted, and its table is left out instead of failing `instrument()`.
    """
    table: dict[type[Event], V] = {}
    for block, build in builders:
        try:
            importlib.import_module(f"scalepatterns.{block}.events")
        except ImportError:
            continue
        table.update(build(tools))
    return table
