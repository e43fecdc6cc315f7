"""OpenTelemetry spans and span events from the blocks' events; trace context in messages.

```python
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scalepatterns.contrib import otel
from scalepatterns.events import Listeners

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
listeners = Listeners()
handle = otel.instrument(provider, listeners=listeners)
handle.uninstrument()
```

What the listener records (the catalogue is in ``docs/observability.md``):

- spans with the measured start and end for work that an event reports with its
  duration (a cache load, a message handled), as children of the caller's current span;
- attributes on the caller's current span for decisions (the route a statement took, the
  shard a key went to);
- span events on the caller's current span for what went wrong or was refused (breaker
  opened or rejected a call, rate limited, retry scheduled, timeout, fallback...).

The queue's trace context travels in W3C ``traceparent``/``tracestate`` message headers:
publish through `TracedProducer` (or pass ``headers=inject()``) and wrap the worker's
handler with `traced_handler`, and the handler's span is a child of the publisher's.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from scalepatterns._deps import require
from scalepatterns.contrib._dispatch import Dispatcher, Handler, Instrumentation, gather
from scalepatterns.events import Event, Listeners

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

__all__ = [
    "ATTRIBUTE_PREFIX",
    "TracedProducer",
    "event_name",
    "extract",
    "inject",
    "instrument",
    "traced_handler",
]

ATTRIBUTE_PREFIX = "scalepatterns"
"""Span attributes and span event names start with this prefix."""

_FEATURE = "scalepatterns.contrib.otel"
_SCOPE = "scalepatterns"
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
_SCALARS = (str, bool, int, float)

# Set by `traced_handler` in the context running a wrapped handler (a worker thread, or an
# async worker's task); the listener then knows the handler's span exists and does not
# make a second one from the completion event the worker emits right after, in the same
# context.
_wrapped: contextvars.ContextVar[bool] = contextvars.ContextVar("sp_traced_handler", default=False)


def _trace() -> Any:
    return require("opentelemetry.trace", extra="otel", feature=_FEATURE)


def _tracer(tracer_provider: TracerProvider | None) -> Tracer:
    from scalepatterns import __version__

    tracer: Tracer = _trace().get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
    return tracer


def event_name(event_type: type[Event]) -> str:
    """A span event name: ``BreakerOpened`` -> ``scalepatterns.breaker_opened``."""
    return f"{ATTRIBUTE_PREFIX}.{_CAMEL.sub('_', event_type.__name__).lower()}"


def _attributes(event: Event) -> dict[str, Any]:
    return {
        f"{ATTRIBUTE_PREFIX}.{f.name}": value
        for f in dataclasses.fields(event)
        if isinstance(value := getattr(event, f.name), _SCALARS)
    }


class _Tools:
    """What the per-block tables build their handlers from."""

    def __init__(self, tracer: Tracer) -> None:
        self.trace = _trace()
        self.tracer = tracer

    def span_event(self, event_type: type[Event]) -> Handler:
        """Record the event as a span event on the caller's current span."""
        name = event_name(event_type)
        current = self.trace.get_current_span

        def handler(event: Event) -> None:
            span = current()
            if span.is_recording():
                span.add_event(name, _attributes(event))

        return handler

    def attributes(self, make: Callable[[Any], Mapping[str, Any]]) -> Handler:
        """Set attributes on the caller's current span."""
        current = self.trace.get_current_span

        def handler(event: Event) -> None:
            span = current()
            if span.is_recording():
                span.set_attributes(make(event))

        return handler

    def timed_span(
        self,
        name: Callable[[Any], str],
        seconds: Callable[[Any], float],
        *,
        kind: str = "INTERNAL",
        extra: Callable[[Any], Mapping[str, Any]] | None = None,
    ) -> Handler:
        """A span that ended now and started `seconds(event)` ago, child of the current span."""
        span_kind = getattr(self.trace.SpanKind, kind)
        tracer = self.tracer

        def handler(event: Event) -> None:
            end = time.time_ns()
            start = end - max(0, int(seconds(event) * 1e9))
            attributes = _attributes(event)
            if extra is not None:
                attributes.update(extra(event))
            span = tracer.start_span(
                name(event), kind=span_kind, start_time=start, attributes=attributes
            )
            span.end(end_time=end)

        return handler

    def events(self, types: Iterable[type[Event]]) -> dict[type[Event], Handler]:
        return {t: self.span_event(t) for t in types}


# --------------------------------------------------------------------- resilience


def _resilience(tools: _Tools) -> dict[type[Event], Handler]:
    from scalepatterns.resilience import events as resilience

    return tools.events(
        (
            resilience.BreakerOpened,
            resilience.BreakerHalfOpened,
            resilience.BreakerClosed,
            resilience.BreakerRejected,
            resilience.RetryScheduled,
            resilience.RetryGaveUp,
            resilience.TimeoutExpired,
            resilience.FallbackUsed,
            resilience.EndpointEjected,
            resilience.EndpointReadmitted,
        )
    )


# ---------------------------------------------------------------------- sharding


def _sharding(tools: _Tools) -> dict[type[Event], Handler]:
    from scalepatterns.sharding import events as sharding

    return {
        sharding.ShardRouted: tools.attributes(
            lambda e: {
                f"{ATTRIBUTE_PREFIX}.shard.router": e.source,
                f"{ATTRIBUTE_PREFIX}.shard": e.shard,
            }
        ),
        **tools.events(
            (
                sharding.FanOutFinished,
                sharding.NodeAdded,
                sharding.NodeRemoved,
                sharding.RowsResharded,
            )
        ),
    }


# ----------------------------------------------------------------------- routing


def _routing(tools: _Tools) -> dict[type[Event], Handler]:
    from scalepatterns.routing import events as routing

    return {
        routing.RouteDecided: tools.attributes(
            lambda e: {
                f"{ATTRIBUTE_PREFIX}.router": e.source,
                f"{ATTRIBUTE_PREFIX}.route.target": e.target,
                f"{ATTRIBUTE_PREFIX}.route.reason": e.reason,
            }
        ),
        **tools.events((routing.ReplicaEjected, routing.ReplicaReadmitted)),
    }


# ------------------------------------------------------------------ backpressure


def _backpressure(tools: _Tools) -> dict[type[Event], Handler]:
    from scalepatterns.backpressure import events as backpressure

    return tools.events(
        (
            backpressure.RateRejected,
            backpressure.RateWaited,
            backpressure.BulkheadRejected,
            backpressure.LimiterBackendFailed,
            backpressure.QueueThrottled,
            backpressure.QueueReleased,
            backpressure.WorkShed,
        )
    )


# ------------------------------------------------------------------------- queue


def _queue(tools: _Tools) -> dict[type[Event], Handler]:
    from scalepatterns.queue import events as queue

    process = tools.timed_span(
        lambda e: f"{e.source} process",
        lambda e: e.seconds,
        kind="CONSUMER",
        extra=lambda e: _messaging(e.source, "process"),
    )
    retried = tools.span_event(queue.MessageRetried)
    dead = tools.span_event(queue.MessageDeadLettered)

    def handled(event: queue.MessageHandled) -> None:
        if not _handled_by_wrapper():
            process(event)

    def failed(record: Handler) -> Handler:
        def handler(event: Event) -> None:
            if not _handled_by_wrapper():  # else the wrapper's span recorded the exception
                record(event)

        return handler

    return {
        queue.MessageHandled: handled,
        queue.MessageRetried: failed(retried),
        queue.MessageDeadLettered: failed(dead),
        **tools.events((queue.MessagePublished, queue.MessageDuplicate, queue.Reconnected)),
    }


# ------------------------------------------------------------------------- cache


def _cache(tools: _Tools) -> dict[type[Event], Handler]:
    from scalepatterns.cache import events as cache

    return {
        cache.CacheLoad: tools.timed_span(lambda e: f"cache load {e.source}", lambda e: e.duration),
        **tools.events((cache.CacheStale, cache.CacheLoadError, cache.CacheBackendError)),
    }


_BLOCKS: tuple[tuple[str, Callable[[_Tools], dict[type[Event], Handler]]], ...] = (
    ("cache", _cache),
    ("routing", _routing),
    ("sharding", _sharding),
    ("queue", _queue),
    ("backpressure", _backpressure),
    ("resilience", _resilience),
)


def instrument(
    tracer_provider: TracerProvider | None = None, listeners: Listeners | None = None
) -> Instrumentation:
    """Record spans, span attributes and span events from the events of `listeners`.

    Args:
        tracer_provider: where spans go (the global tracer provider by default).
        listeners: the registry of listeners to listen on (``default_listeners``).

    Raises:
        MissingDependency: opentelemetry-api is not installed
            (``pip install 'scalepatterns[otel]'``).
    """
    tools = _Tools(_tracer(tracer_provider))
    table = gather(_BLOCKS, tools)
    return Instrumentation(Dispatcher(table), listeners, tracer_provider or "global")


# -------------------------------------------------------------- queue trace context


@functools.cache
def _propagator() -> Any:
    # Stateless and thread-safe: one for the process instead of one per message.
    module = require("opentelemetry.trace.propagation.tracecontext", extra="otel", feature=_FEATURE)
    return module.TraceContextTextMapPropagator()


def inject(headers: Mapping[str, Any] | None = None, context: Any = None) -> dict[str, Any]:
    """`headers` plus the W3C trace context (``traceparent``, ``tracestate``) of `context`.

    `context` defaults to the current one. Pass the result as a message's ``headers=``.
    """
    carrier: dict[str, Any] = dict(headers or {})
    _propagator().inject(carrier, context=context)
    return carrier


def extract(trace_headers: Mapping[str, Any]) -> Any:
    """The OpenTelemetry context carried by W3C trace headers (e.g. a `Message.trace`)."""
    carrier = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in trace_headers.items()}
    return _propagator().extract(carrier)


def _messaging(queue: str, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": "scalepatterns",
        "messaging.destination.name": queue,
        "messaging.operation.type": operation,
    }


class TracedProducer:
    """Wraps a queue `Producer`: each publish runs in a PRODUCER span whose context travels
    in the message headers.

    Args:
        producer: the `scalepatterns.queue.Producer` (or anything with the same
            ``publish(queue, body, **kw)`` / ``publish_many(queue, bodies, **kw)``).
        tracer_provider: where spans go (the global tracer provider by default).
    """

    def __init__(self, producer: Any, tracer_provider: TracerProvider | None = None) -> None:
        self.producer = producer
        self._tracer = _tracer(tracer_provider)
        self._kind = _trace().SpanKind.PRODUCER

    def publish(
        self, queue: str, body: Any, *, headers: Mapping[str, Any] | None = None, **kw: Any
    ) -> str:
        """Publish one message in a ``<queue> publish`` span; returns the message id."""
        with self._tracer.start_as_current_span(
            f"{queue} publish", kind=self._kind, attributes=_messaging(queue, "publish")
        ) as span:
            message_id: str = self.producer.publish(queue, body, headers=inject(headers), **kw)
            span.set_attribute("messaging.message.id", message_id)
            return message_id

    def publish_many(
        self,
        queue: str,
        bodies: Iterable[Any],
        *,
        headers: Mapping[str, Any] | None = None,
        **kw: Any,
    ) -> list[str]:
        """Publish a batch in one ``<queue> publish`` span (all messages carry its context)."""
        with self._tracer.start_as_current_span(
            f"{queue} publish", kind=self._kind, attributes=_messaging(queue, "publish")
        ) as span:
            ids: list[str] = self.producer.publish_many(
                queue, bodies, headers=inject(headers), **kw
            )
            span.set_attribute("messaging.batch.message_count", len(ids))
            return ids

    def __getattr__(self, name: str) -> Any:
        return getattr(self.producer, name)

    def __repr__(self) -> str:
        return f"TracedProducer({self.producer!r})"


def traced_handler(
    handler: Callable[[Any], Any],
    *,
    queue: str | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Callable[[Any], Any]:
    """Wrap a worker's handler so each message is handled in a CONSUMER span.

    The span (``<queue> process``) is a child of the span whose context the message
    carries in its ``traceparent`` header (see `TracedProducer`, `inject`); an exception
    the handler raises is recorded on it and re-raised unchanged. Works for ``def`` and
    ``async def`` handlers (the wrapper is of the same kind).

    Args:
        handler: takes a `scalepatterns.queue.Message`.
        queue: the span's destination name (default: the message's routing key).
        tracer_provider: where spans go (the global tracer provider by default).
    """
    from scalepatterns._coroutines import is_coroutine_callable

    tracer = _tracer(tracer_provider)
    kind = _trace().SpanKind.CONSUMER

    def start(message: Any) -> Any:
        _wrapped.set(True)
        destination = queue or getattr(message, "routing_key", "") or "message"
        attributes = _messaging(destination, "process")
        attributes["messaging.message.id"] = str(getattr(message, "id", ""))
        attributes[f"{ATTRIBUTE_PREFIX}.attempt"] = int(getattr(message, "attempt", 1))
        return tracer.start_as_current_span(
            f"{destination} process",
            context=extract(getattr(message, "trace", None) or {}),
            kind=kind,
            attributes=attributes,
        )

    if is_coroutine_callable(handler):

        @functools.wraps(handler)
        async def async_wrapper(message: Any) -> Any:
            with start(message):
                return await handler(message)

        return async_wrapper

    @functools.wraps(handler)
    def wrapper(message: Any) -> Any:
        with start(message):
            return handler(message)

    return wrapper


def _handled_by_wrapper() -> bool:
    """True (once) if `traced_handler` already made this context's handler span."""
    if _wrapped.get():
        _wrapped.set(False)
        return True
    return False
