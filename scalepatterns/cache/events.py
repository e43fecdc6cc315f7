"""Events the cache emits; `source` is the cache's namespace, never a user key."""

from __future__ import annotations

from dataclasses import dataclass

from scalepatterns.events import Event

__all__ = [
    "CacheBackendError",
    "CacheEvent",
    "CacheHit",
    "CacheLoad",
    "CacheLoadError",
    "CacheMiss",
    "CacheStale",
]


@dataclass(frozen=True, slots=True)
class CacheEvent(Event):
    """Base of the cache's events.

    Attributes:
        function: the cached function's qualified name.
    """

    function: str


@dataclass(frozen=True, slots=True)
class CacheHit(CacheEvent):
    """A fresh entry answered the call."""


@dataclass(frozen=True, slots=True)
class CacheMiss(CacheEvent):
    """No usable entry: the call loads (or waits for another caller's load)."""


@dataclass(frozen=True, slots=True)
class CacheStale(CacheEvent):
    """A stale entry answered the call.

    Attributes:
        reason: ``"revalidate"`` (a refresh runs behind it) or ``"error"`` (the loader raised).
    """

    reason: str


@dataclass(frozen=True, slots=True)
class CacheLoad(CacheEvent):
    """The function ran and its result was stored.

    Attributes:
        duration: seconds the function took.
        early: true when this was an early (XFetch) or background refresh.
    """

    duration: float
    early: bool


@dataclass(frozen=True, slots=True)
class CacheLoadError(CacheEvent):
    """The function raised while loading; waiters share this error."""

    error: str


@dataclass(frozen=True, slots=True)
class CacheBackendError(CacheEvent):
    """The backend failed (down, slow, garbage); the call went on without it.

    Attributes:
        backend: the backend's short name (``"redis"``, ``"memory"``...).
        operation: ``"get"``, ``"set"``, ``"delete"``, ``"decode"``, ``"lock"``...
        error: the exception's type and message.
        breaker_open: true while the outage guard skips the backend.
    """

    backend: str
    operation: str
    error: str
    breaker_open: bool
