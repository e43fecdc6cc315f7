"""Structured log lines from the blocks' events, through the standard `logging` module.

Quiet by default: at the default level (INFO) nothing is logged for the everyday events
(a cache hit or miss, a routed statement, an allowed call); what an operator must see
is logged as WARNING (a breaker opened, an endpoint or replica ejected, a backend failing,
a message dead-lettered) and recoveries as INFO. Repeats of one kind of event from one
source are folded: at most one line per `min_interval` seconds, the next line saying how
many were suppressed.

Every line carries the same `extra` fields, for JSON formatters and log pipelines:
``sp_event`` (the event's class name), ``sp_block``, ``sp_source``, ``sp_suppressed``
and one ``sp_<field>`` per field of the event.

```python
import logging

from scalepatterns.contrib import logging as sp_logging
from scalepatterns.events import Listeners

listeners = Listeners()
handle = sp_logging.instrument(logging.getLogger("myapp.scalepatterns"), listeners=listeners)
handle.uninstrument()
```
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.contrib._dispatch import Dispatcher, Handler, Instrumentation, block_of, gather
from scalepatterns.events import Event, Listeners

__all__ = ["EXTRA_PREFIX", "Level", "default_levels", "instrument"]

EXTRA_PREFIX = "sp_"
"""Prefix of the `extra` fields set on every log record."""

Level = int | Callable[[Any], int]
"""A logging level, or a function choosing it from the event."""

DEBUG, INFO, WARNING = logging.DEBUG, logging.INFO, logging.WARNING


def _sharding(_: None) -> dict[type[Event], Level]:
    from scalepatterns.sharding import events as sharding

    return {
        sharding.ShardRouted: DEBUG,
        sharding.NodeAdded: INFO,
        sharding.NodeRemoved: INFO,
        sharding.FanOutFinished: lambda e: WARNING if e.failed else DEBUG,
        sharding.RowsResharded: INFO,
    }


def _routing(_: None) -> dict[type[Event], Level]:
    from scalepatterns.routing import events as routing

    return {
        routing.RouteDecided: DEBUG,
        routing.ReplicaEjected: WARNING,
        routing.ReplicaReadmitted: INFO,
        routing.LagSampled: DEBUG,
    }


def _resilience(_: None) -> dict[type[Event], Level]:
    from scalepatterns.resilience import events as resilience

    return {
        resilience.BreakerOpened: WARNING,
        resilience.BreakerHalfOpened: INFO,
        resilience.BreakerClosed: INFO,
        resilience.BreakerRejected: DEBUG,
        resilience.EndpointEjected: WARNING,
        resilience.EndpointReadmitted: INFO,
        resilience.RetryAttempt: DEBUG,
        resilience.RetryScheduled: DEBUG,
        resilience.RetryGaveUp: WARNING,
        resilience.TimeoutExpired: WARNING,
        resilience.FallbackUsed: INFO,
    }


def _backpressure(_: None) -> dict[type[Event], Level]:
    from scalepatterns.backpressure import events as backpressure

    return {
        backpressure.RateAllowed: DEBUG,
        backpressure.RateRejected: DEBUG,
        backpressure.RateWaited: DEBUG,
        backpressure.LimiterBackendFailed: WARNING,
        backpressure.BulkheadRejected: DEBUG,
        backpressure.LimitChanged: DEBUG,
        backpressure.QueueThrottled: WARNING,
        backpressure.QueueReleased: INFO,
        backpressure.WorkShed: WARNING,
    }


def _queue(_: None) -> dict[type[Event], Level]:
    from scalepatterns.queue import events as queue

    return {
        queue.MessagePublished: DEBUG,
        queue.MessageHandled: DEBUG,
        queue.MessageRetried: INFO,
        queue.MessageDeadLettered: WARNING,
        queue.MessageDuplicate: DEBUG,
        queue.Reconnected: WARNING,
    }


def _cache(_: None) -> dict[type[Event], Level]:
    from scalepatterns.cache import events as cache

    return {
        cache.CacheHit: DEBUG,
        cache.CacheMiss: DEBUG,
        cache.CacheStale: lambda e: INFO if e.reason == "error" else DEBUG,
        cache.CacheLoad: DEBUG,
        cache.CacheLoadError: WARNING,
        cache.CacheBackendError: WARNING,
    }


_BLOCKS: tuple[tuple[str, Callable[[None], dict[type[Event], Level]]], ...] = (
    ("cache", _cache),
    ("routing", _routing),
    ("sharding", _sharding),
    ("queue", _queue),
    ("backpressure", _backpressure),
    ("resilience", _resilience),
)


def default_levels() -> dict[type[Event], Level]:
    """The level each event type is logged at (an int, or a function of the event)."""
    return gather(_BLOCKS, None)


class _Folder:
    """Folds repeats of one (event type, source, level) into one line per interval."""

    __slots__ = ("_clock", "_interval", "_lock", "_seen")

    def __init__(self, interval: float, clock: Clock) -> None:
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[type[Event], str, int], list[float]] = {}

    def admit(self, event: Event, level: int) -> int | None:
        """None to suppress this line, else how many lines were suppressed before it."""
        if self._interval <= 0:
            return 0
        key = (type(event), event.source, level)
        now = self._clock.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is None:
                self._seen[key] = [now, 0]
                return 0
            if now - seen[0] < self._interval:
                seen[1] += 1
                return None
            suppressed = int(seen[1])
            seen[0], seen[1] = now, 0
            return suppressed


def _fields(event: Event) -> list[tuple[str, Any]]:
    return [(f.name, getattr(event, f.name)) for f in dataclasses.fields(event)]


def _handler(
    event_type: type[Event], level: Level, least: int, logger: logging.Logger, folder: _Folder
) -> Handler:
    block = block_of(event_type)
    name = event_type.__name__

    def handler(event: Event) -> None:
        chosen = level(event) if callable(level) else level
        if chosen < least or not logger.isEnabledFor(chosen):
            return
        suppressed = folder.admit(event, chosen)
        if suppressed is None:
            return
        fields = _fields(event)
        extra: dict[str, Any] = {
            f"{EXTRA_PREFIX}event": name,
            f"{EXTRA_PREFIX}block": block,
            f"{EXTRA_PREFIX}suppressed": suppressed,
        }
        extra.update((f"{EXTRA_PREFIX}{key}", value) for key, value in fields)
        details = ", ".join(f"{key}={value!r}" for key, value in fields if key != "source")
        tail = f" ({suppressed} similar suppressed)" if suppressed else ""
        logger.log(
            chosen,
            "%s %s %s%s",
            block,
            name,
            f"{event.source!r}: {details}" if details else repr(event.source),
            tail,
            extra=extra,
        )

    return handler


def instrument(
    logger: logging.Logger | None = None,
    level: int = logging.INFO,
    listeners: Listeners | None = None,
    *,
    min_interval: float = 10.0,
    levels: Mapping[type[Event], Level] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Instrumentation:
    """Log the events of `listeners` at or above `level` to `logger`.

    Args:
        logger: where lines go (``logging.getLogger("scalepatterns")`` by default).
        level: the least level logged; events below it are not even looked at (DEBUG
            logs every event, including each cache hit).
        listeners: the registry of listeners to listen on (``default_listeners``).
        min_interval: seconds between two lines for the same kind of event from the same
            source; 0 logs every one.
        levels: overrides of `default_levels()` (event type -> level or function).
        clock: for the folding interval (tests pass a `FakeClock`).
    """
    target = logger if logger is not None else logging.getLogger("scalepatterns")
    chosen = {**default_levels(), **(levels or {})}
    folder = _Folder(min_interval, clock)
    table = {
        event_type: _handler(event_type, event_level, level, target, folder)
        for event_type, event_level in chosen.items()
        if callable(event_level) or event_level >= level
    }
    return Instrumentation(Dispatcher(table), listeners, target)
