"""Small typed events and the listener registry every block emits them through.

Each block defines its events as frozen dataclasses subclassing `Event` (for example
`CacheHit`, `BreakerOpened`). A component takes a `listeners=` argument, a `Listeners`
registry, defaulting to the process-wide `default_listeners`. On the hot path it emits
like this, so with no listener registered the cost is one attribute check and no event
object is even built:

```python
if self._listeners.active:
    self._listeners.emit(CacheHit(source=self.name, key=key))
```

A listener is any callable taking an event. A listener that raises is logged and
skipped: observability never breaks the caller.

```python
from scalepatterns.events import Event, EventRecorder, Listeners

registry = Listeners()
recorder = EventRecorder()
remove = registry.add(recorder)
registry.emit(Event(source="demo"))
assert [e.source for e in recorder.events] == ["demo"]
remove()
assert not registry.active
```
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "Event",
    "EventRecorder",
    "Listener",
    "Listeners",
    "default_listeners",
]

_log = logging.getLogger("scalepatterns.events")

Listener = Callable[["Event"], None]
"""A callable that receives events."""

E = TypeVar("E", bound="Event")


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event.

    Attributes:
        source: the name of the component that emitted it (a cache namespace, a breaker
            name, a queue...). Low cardinality: never a user key.
    """

    source: str


class Listeners:
    """A registry of listeners; `active` is true while at least one is registered.

    Thread-safe: `add` and `remove` swap an immutable tuple, so `emit` never takes a lock.
    """

    __slots__ = ("_entries", "_lock", "active")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: tuple[tuple[Listener, tuple[type[Event], ...]], ...] = ()
        self.active = False

    def add(self, listener: Listener, *types: type[Event]) -> Callable[[], None]:
        """Register `listener` for events of `types` (every event if none given).

        Returns a function that removes this registration.
        """
        if not callable(listener):
            raise TypeError(
                f"a listener must be a callable taking one Event, not {type(listener).__name__}"
            )
        for event_type in types:
            if not (isinstance(event_type, type) and issubclass(event_type, Event)):
                raise TypeError(f"listen for Event subclasses, not {event_type!r}")
        entry = (listener, types)
        with self._lock:
            self._entries = (*self._entries, entry)
            self.active = True

        def remove() -> None:
            with self._lock:
                entries = list(self._entries)
                if entry in entries:
                    entries.remove(entry)
                self._entries = tuple(entries)
                self.active = bool(self._entries)

        return remove

    def remove(self, listener: Listener) -> None:
        """Remove every registration of `listener`."""
        with self._lock:
            self._entries = tuple(e for e in self._entries if e[0] is not listener)
            self.active = bool(self._entries)

    def clear(self) -> None:
        """Remove every listener."""
        with self._lock:
            self._entries = ()
            self.active = False

    def emit(self, event: Event) -> None:
        """Deliver `event` to every listener registered for its type."""
        for listener, types in self._entries:
            if types and not isinstance(event, types):
                continue
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a broken listener must never break the caller
                _log.exception("event listener %r failed on %r", listener, event)

    def __repr__(self) -> str:
        return f"Listeners({len(self._entries)} registered)"


default_listeners = Listeners()
"""The process-wide registry components use unless given their own."""


class EventRecorder:
    """A listener that keeps every event it receives; handy in tests and notebooks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of_type(self, event_type: type[E]) -> list[E]:
        """The recorded events that are instances of `event_type`, in order."""
        with self._lock:
            return [e for e in self.events if isinstance(e, event_type)]

    def clear(self) -> None:
        with self._lock:
            self.events.clear()
