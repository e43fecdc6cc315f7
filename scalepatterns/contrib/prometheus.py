"""Prometheus metrics for every block, from the events they emit.

```python
from prometheus_client import CollectorRegistry, generate_latest

from scalepatterns.contrib import prometheus
from scalepatterns.events import Listeners

registry, listeners = CollectorRegistry(), Listeners()
handle = prometheus.instrument(registry, listeners=listeners)
# ... components built with listeners=listeners emit; the registry counts ...
assert b"# HELP" in generate_latest(registry) or True
handle.uninstrument()
```

`instrument()` registers one listener. It keeps the metric families of one registry
together (calling it again for the same registry reuses them) and caches each labelled
child, so updating a counter costs a dictionary lookup and the counter's own lock.
Labels are the event's `source` (a cache namespace, a queue, a breaker's name...) and
small enums from the event (a reason, a target, a state), never a user key. The full
catalogue is in ``docs/observability.md``.
"""

from __future__ import annotations

import operator
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from scalepatterns._deps import require
from scalepatterns.contrib._dispatch import Dispatcher, Handler, Instrumentation, gather
from scalepatterns.events import Event, Listeners

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["BREAKER_STATES", "PREFIX", "instrument", "metric_names", "watch_balancer"]

PREFIX = "scalepatterns"
"""Every metric name starts with this prefix."""

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
"""Values of the ``scalepatterns_breaker_state`` gauge."""

_FEATURE = "scalepatterns.contrib.prometheus.instrument()"


class _Family:
    """A labelled metric whose children are cached (``labels()`` takes a lock each call)."""

    __slots__ = ("_children", "_lock", "metric")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self.metric.labels(*values)
            with self._lock:
                self._children = {**self._children, values: child}
        return child

    def counting(self, *fields: str) -> Handler:
        """A handler adding 1 to the child labelled by the event's `fields`.

        The hot-path form: one attribute getter, one dictionary lookup, the bound ``inc``
        of the child (cached), no argument packing.
        """
        key_of = operator.attrgetter(*fields)
        labels = self.metric.labels
        single = len(fields) == 1
        incs: dict[Any, Callable[[], None]] = {}
        lock = self._lock

        def handler(event: Event) -> None:
            key = key_of(event)
            inc = incs.get(key)
            if inc is None:
                inc = (labels(key) if single else labels(*key)).inc
                with lock:
                    incs[key] = inc
            inc()

        return handler


class _Metrics:
    """The metric families of one registry and the event table that updates them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.prom = require("prometheus_client", extra="prometheus", feature=_FEATURE)
        self.core = require("prometheus_client.core", extra="prometheus", feature=_FEATURE)
        self.registry = registry
        self.names: list[str] = []
        self.balancers: weakref.WeakSet[Any] = weakref.WeakSet()
        self.table: dict[type[Event], Handler] = gather(_BLOCKS, self)

    def _make(self, kind: str, name: str, doc: str, labels: tuple[str, ...], **kw: Any) -> _Family:
        full = f"{PREFIX}_{name}"
        self.names.append(full)
        factory = getattr(self.prom, kind)
        return _Family(factory(full, doc, labels, registry=self.registry, **kw))

    def counter(self, name: str, doc: str, *labels: str) -> _Family:
        return self._make("Counter", name, doc, labels)

    def gauge(self, name: str, doc: str, *labels: str) -> _Family:
        return self._make("Gauge", name, doc, labels)

    def histogram(
        self, name: str, doc: str, *labels: str, buckets: tuple[float, ...] | None = None
    ) -> _Family:
        kw: dict[str, Any] = {"buckets": buckets} if buckets else {}
        return self._make("Histogram", name, doc, labels, **kw)

    def collector(self, collect: Callable[[], Iterator[Any]], *names: str) -> None:
        """Register a custom collector whose values are computed at scrape time."""
        self.names.extend(f"{PREFIX}_{name}" for name in names)

        class _Collector:
            def collect(self) -> Iterator[Any]:
                return collect()

            def describe(self) -> list[Any]:
                return []

        self.registry.register(_Collector())


# --------------------------------------------------------------------- resilience


def _resilience(m: _Metrics) -> dict[type[Event], Handler]:
    from scalepatterns.resilience import events as resilience

    attempts = m.counter("retry_attempts_total", "Attempts run by retry policies.", "function")
    retries = m.counter(
        "retry_retries_total", "Failed attempts that were scheduled again.", "function"
    )
    gave_up = m.counter(
        "retry_gave_up_total", "Calls whose retrying stopped (attempts, deadline or budget).",
        "function", "reason",
    )  # fmt: skip
    state = m.gauge(
        "breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", "breaker"
    )
    transitions = m.counter(
        "breaker_transitions_total", "Circuit breaker state changes, by the state entered.",
        "breaker", "state",
    )  # fmt: skip
    rejected = m.counter(
        "breaker_rejected_calls_total", "Calls refused by an open breaker.", "breaker"
    )
    ejections = m.counter(
        "balancer_ejections_total", "Endpoints taken out of a load balancer's rotation.",
        "balancer", "endpoint", "reason",
    )  # fmt: skip
    readmissions = m.counter(
        "balancer_readmissions_total", "Ejected endpoints back in rotation.",
        "balancer", "endpoint",
    )  # fmt: skip
    ejected = m.gauge(
        "balancer_endpoint_ejected", "1 while the endpoint is ejected, else 0.",
        "balancer", "endpoint",
    )  # fmt: skip
    timeouts = m.counter("timeouts_total", "Calls that ran out of their time budget.", "function")
    fallbacks = m.counter(
        "fallbacks_total", "Calls answered by a fallback, by the error handled.",
        "function", "error",
    )  # fmt: skip

    def balancer_stats() -> Iterator[Any]:
        core, labels = m.core, ["balancer", "endpoint"]
        picks = core.CounterMetricFamily(
            f"{PREFIX}_balancer_picks", "Calls sent to each endpoint.", labels=labels
        )
        failures = core.CounterMetricFamily(
            f"{PREFIX}_balancer_failures", "Calls to each endpoint that failed.", labels=labels
        )
        in_flight = core.GaugeMetricFamily(
            f"{PREFIX}_balancer_in_flight_calls", "Calls running on each endpoint.", labels=labels
        )
        latency = core.GaugeMetricFamily(
            f"{PREFIX}_balancer_latency_ewma_seconds",
            "Each endpoint's moving average latency.",
            labels=labels,
        )
        for balancer in sorted(m.balancers, key=lambda b: str(b.name)):
            for name, stats in sorted(balancer.stats().items()):
                values = [str(balancer.name), name]
                picks.add_metric(values, stats.calls)
                failures.add_metric(values, stats.failures)
                in_flight.add_metric(values, stats.active)
                latency.add_metric(values, stats.ewma_latency)
        yield from (picks, failures, in_flight, latency)

    m.collector(
        balancer_stats,
        "balancer_picks_total",
        "balancer_failures_total",
        "balancer_in_flight_calls",
        "balancer_latency_ewma_seconds",
    )

    def breaker(to: str) -> Handler:
        value = BREAKER_STATES[to]

        def update(e: Event) -> None:
            state(e.source).set(value)
            transitions(e.source, to).inc()

        return update

    def ejected_endpoint(e: resilience.EndpointEjected) -> None:
        ejections(e.source, e.endpoint, e.reason).inc()
        ejected(e.source, e.endpoint).set(1)

    def readmitted_endpoint(e: resilience.EndpointReadmitted) -> None:
        readmissions(e.source, e.endpoint).inc()
        ejected(e.source, e.endpoint).set(0)

    return {
        resilience.RetryAttempt: attempts.counting("source"),
        resilience.RetryScheduled: retries.counting("source"),
        resilience.RetryGaveUp: gave_up.counting("source", "reason"),
        resilience.BreakerOpened: breaker("open"),
        resilience.BreakerHalfOpened: breaker("half_open"),
        resilience.BreakerClosed: breaker("closed"),
        resilience.BreakerRejected: rejected.counting("source"),
        resilience.EndpointEjected: ejected_endpoint,
        resilience.EndpointReadmitted: readmitted_endpoint,
        resilience.TimeoutExpired: timeouts.counting("source"),
        resilience.FallbackUsed: fallbacks.counting("source", "error"),
    }


# ---------------------------------------------------------------------- sharding


def _sharding(m: _Metrics) -> dict[type[Event], Handler]:
    from scalepatterns.sharding import events as sharding

    lookups = m.counter("shard_lookups_total", "Keys routed to each shard.", "router", "shard")
    nodes = m.counter(
        "shard_node_changes_total", "Nodes added to or removed from a placement.",
        "placement", "change",
    )  # fmt: skip
    moved = m.counter(
        "shard_keys_moved_total", "Keys that changed owner when nodes changed (bounded ring).",
        "placement",
    )  # fmt: skip
    fanouts = m.counter("shard_fanouts_total", "Fan-out calls across shards.", "router")
    fanout_failures = m.counter(
        "shard_fanout_failures_total", "Shards that raised during a fan-out.", "router"
    )
    resharded = m.counter(
        "shard_rows_resharded_total", "Rows copied, verified and deleted by resharding.",
        "resharder", "from_shard", "to_shard",
    )  # fmt: skip
    gauge_family = m.core.GaugeMetricFamily

    def skew() -> Iterator[Any]:
        family = gauge_family(
            f"{PREFIX}_shard_lookup_skew_ratio",
            "Busiest shard's lookups over the mean per shard (1.0 = perfectly even).",
            labels=["router"],
        )
        per_router: dict[str, list[float]] = {}
        for metric in lookups.metric.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    per_router.setdefault(sample.labels["router"], []).append(sample.value)
        for router, counts in sorted(per_router.items()):
            mean = sum(counts) / len(counts)
            if mean > 0:
                family.add_metric([router], max(counts) / mean)
        yield family

    m.collector(skew, "shard_lookup_skew_ratio")

    def node(change: str) -> Handler:
        def update(e: sharding.NodeAdded | sharding.NodeRemoved) -> None:
            nodes(e.source, change).inc()
            if e.moved:
                moved(e.source).inc(e.moved)

        return update

    def fanout(e: sharding.FanOutFinished) -> None:
        fanouts(e.source).inc()
        if e.failed:
            fanout_failures(e.source).inc(e.failed)

    return {
        sharding.ShardRouted: lookups.counting("source", "shard"),
        sharding.NodeAdded: node("added"),
        sharding.NodeRemoved: node("removed"),
        sharding.FanOutFinished: fanout,
        sharding.RowsResharded: lambda e: resharded(e.source, e.from_shard, e.to_shard).inc(e.rows),
    }


# ----------------------------------------------------------------------- routing


def _routing(m: _Metrics) -> dict[type[Event], Handler]:
    from scalepatterns.routing import events as routing

    statements = m.counter(
        "router_statements_total", "Statements routed, by target (primary or replica) and reason.",
        "router", "target", "reason",
    )  # fmt: skip
    ejections = m.counter(
        "router_replica_ejections_total", "Replicas taken out of rotation (lag or unreachable).",
        "router", "replica", "reason",
    )  # fmt: skip
    readmissions = m.counter(
        "router_replica_readmissions_total", "Replicas back in rotation.", "router", "replica"
    )
    in_rotation = m.gauge(
        "router_replica_in_rotation", "1 while the replica serves reads, 0 while ejected.",
        "router", "replica",
    )  # fmt: skip
    lag_seconds = m.gauge(
        "router_replica_lag_seconds", "Last measured replication lag in seconds.",
        "router", "replica",
    )  # fmt: skip
    lag_bytes = m.gauge(
        "router_replica_lag_bytes", "Last measured WAL bytes not yet replayed.",
        "router", "replica",
    )  # fmt: skip

    def ejected(e: routing.ReplicaEjected) -> None:
        ejections(e.source, e.replica, e.reason).inc()
        in_rotation(e.source, e.replica).set(0)

    def readmitted(e: routing.ReplicaReadmitted) -> None:
        readmissions(e.source, e.replica).inc()
        in_rotation(e.source, e.replica).set(1)

    def lag(e: routing.LagSampled) -> None:
        if e.lag_seconds is not None:
            lag_seconds(e.source, e.replica).set(e.lag_seconds)
        if e.lag_bytes is not None:
            lag_bytes(e.source, e.replica).set(e.lag_bytes)

    return {
        routing.RouteDecided: statements.counting("source", "target", "reason"),
        routing.ReplicaEjected: ejected,
        routing.ReplicaReadmitted: readmitted,
        routing.LagSampled: lag,
    }


# ------------------------------------------------------------------ backpressure


def _backpressure(m: _Metrics) -> dict[type[Event], Handler]:
    from scalepatterns.backpressure import events as backpressure

    allowed = m.counter(
        "limiter_allowed_total", "Rate limiter decisions that allowed a call.",
        "limiter", "backend",
    )  # fmt: skip
    rejected = m.counter(
        "limiter_rejected_total", "Rate limiter decisions that refused a call.",
        "limiter", "backend",
    )  # fmt: skip
    waited = m.histogram(
        "limiter_wait_duration_seconds", "Time callers waited for a rate limiter.", "limiter"
    )
    backend_failures = m.counter(
        "limiter_backend_failures_total", "Decisions taken without the limiter's backend.",
        "limiter", "allowed",
    )  # fmt: skip
    bulkhead = m.counter(
        "bulkhead_rejected_total", "Calls refused by a concurrency limit (full, timeout, shed).",
        "bulkhead", "reason",
    )  # fmt: skip
    limit = m.gauge(
        "concurrency_limit", "Current limit of an adaptive concurrency limiter.", "limiter"
    )
    depth = m.gauge(
        "queue_depth_messages", "Queue depth seen by backpressure at its last transition.",
        "queue",
    )  # fmt: skip
    throttled = m.gauge(
        "queue_throttled", "1 while producers to the queue are held back, else 0.", "queue"
    )
    throttles = m.counter(
        "queue_throttles_total", "Times a queue crossed its high watermark.", "queue"
    )
    shed = m.counter(
        "work_shed_total", "Work dropped to relieve pressure, by who shed it.", "source", "by"
    )

    def throttle(e: backpressure.QueueThrottled) -> None:
        depth(e.source).set(e.depth)
        throttled(e.source).set(1)
        throttles(e.source).inc()

    def release(e: backpressure.QueueReleased) -> None:
        depth(e.source).set(e.depth)
        throttled(e.source).set(0)

    return {
        backpressure.RateAllowed: allowed.counting("source", "backend"),
        backpressure.RateRejected: rejected.counting("source", "backend"),
        backpressure.RateWaited: lambda e: waited(e.source).observe(e.waited),
        backpressure.LimiterBackendFailed: lambda e: backend_failures(
            e.source, "true" if e.allowed else "false"
        ).inc(),
        backpressure.BulkheadRejected: bulkhead.counting("source", "reason"),
        backpressure.LimitChanged: lambda e: limit(e.source).set(e.new),
        backpressure.QueueThrottled: throttle,
        backpressure.QueueReleased: release,
        backpressure.WorkShed: shed.counting("source", "by"),
    }


# ------------------------------------------------------------------------- queue


def _queue(m: _Metrics) -> dict[type[Event], Handler]:
    from scalepatterns.queue import events as queue

    published = m.counter(
        "queue_published_messages_total", "Messages the broker confirmed.", "queue"
    )
    acked = m.counter("queue_acked_messages_total", "Messages handled and acknowledged.", "queue")
    latency = m.histogram(
        "queue_handler_duration_seconds", "Time handlers took on messages they handled.",
        "queue",
    )  # fmt: skip
    retried = m.counter(
        "queue_retried_messages_total", "Handler failures sent back after a delay.", "queue"
    )
    dead = m.counter(
        "queue_dead_lettered_messages_total", "Messages moved to the dead-letter queue.",
        "queue", "error",
    )  # fmt: skip
    duplicates = m.counter(
        "queue_duplicate_messages_total", "Redeliveries already handled, acked unseen.", "queue"
    )
    reconnects = m.counter(
        "queue_broker_reconnects_total", "Broker connections re-established.", "broker"
    )

    def handled(e: queue.MessageHandled) -> None:
        acked(e.source).inc()
        latency(e.source).observe(e.seconds)

    return {
        queue.MessagePublished: lambda e: published(e.source).inc(e.count),
        queue.MessageHandled: handled,
        queue.MessageRetried: retried.counting("source"),
        queue.MessageDeadLettered: dead.counting("source", "error"),
        queue.MessageDuplicate: duplicates.counting("source"),
        queue.Reconnected: reconnects.counting("source"),
    }


# ------------------------------------------------------------------------- cache


def _cache(m: _Metrics) -> dict[type[Event], Handler]:
    from scalepatterns.cache import events as cache

    hits = m.counter("cache_hits_total", "Calls answered by a fresh cache entry.", "cache")
    misses = m.counter("cache_misses_total", "Calls that found no usable entry.", "cache")
    stale = m.counter(
        "cache_stale_total", "Calls answered by a stale entry (revalidate or error).",
        "cache", "reason",
    )  # fmt: skip
    loads = m.histogram(
        "cache_load_duration_seconds", "Time the cached function took to load a value.",
        "cache", "early",
    )  # fmt: skip
    load_errors = m.counter("cache_load_errors_total", "Loads whose function raised.", "cache")
    backend_errors = m.counter(
        "cache_backend_errors_total", "Cache backend failures the call went on without.",
        "cache", "backend", "operation",
    )  # fmt: skip
    return {
        cache.CacheHit: hits.counting("source"),
        cache.CacheMiss: misses.counting("source"),
        cache.CacheStale: stale.counting("source", "reason"),
        cache.CacheLoad: lambda e: loads(e.source, "true" if e.early else "false").observe(
            e.duration
        ),
        cache.CacheLoadError: load_errors.counting("source"),
        cache.CacheBackendError: lambda e: backend_errors(e.source, e.backend, e.operation).inc(),
    }


_BLOCKS: tuple[tuple[str, Callable[[_Metrics], dict[type[Event], Handler]]], ...] = (
    ("cache", _cache),
    ("routing", _routing),
    ("sharding", _sharding),
    ("queue", _queue),
    ("backpressure", _backpressure),
    ("resilience", _resilience),
)

_per_registry: weakref.WeakKeyDictionary[Any, _Metrics] = weakref.WeakKeyDictionary()
_per_registry_lock = threading.Lock()


def _metrics_for(registry: CollectorRegistry | None) -> _Metrics:
    """The metrics kept in `registry` (``prometheus_client.REGISTRY`` when None)."""
    if registry is None:
        prom = require("prometheus_client", extra="prometheus", feature=_FEATURE)
        registry = prom.REGISTRY
    with _per_registry_lock:
        metrics = _per_registry.get(registry)
        if metrics is None:
            metrics = _per_registry[registry] = _Metrics(registry)
        return metrics


def instrument(
    registry: CollectorRegistry | None = None, listeners: Listeners | None = None
) -> Instrumentation:
    """Maintain Prometheus metrics from the events emitted through `listeners`.

    Args:
        registry: the `prometheus_client.CollectorRegistry` to register the metrics in
            (``prometheus_client.REGISTRY`` by default). Instrumenting the same registry
            again reuses its metrics.
        listeners: the registry of listeners to listen on (``default_listeners``).

    Returns:
        An `Instrumentation`; ``uninstrument()`` stops updating (recorded values stay).

    Raises:
        MissingDependency: prometheus_client is not installed
            (``pip install 'scalepatterns[prometheus]'``).
    """
    metrics = _metrics_for(registry)
    return Instrumentation(Dispatcher(metrics.table), listeners, metrics.registry)


def metric_names(registry: CollectorRegistry | None = None) -> list[str]:
    """The names of the metrics `instrument()` maintains (as declared, before suffixes)."""
    return list(_metrics_for(registry).names)


def watch_balancer(balancer: Any, registry: CollectorRegistry | None = None) -> None:
    """Expose a `LoadBalancer`'s per-endpoint picks, failures, in-flight calls and latency.

    The load balancer emits no event per pick (that would cost every call); its own
    counters are read at scrape time instead, into ``scalepatterns_balancer_picks_total``,
    ``..._failures_total``, ``..._in_flight_calls`` and ``..._latency_ewma_seconds``. The
    balancer is held weakly: a discarded balancer drops out of the scrape.
    """
    if not callable(getattr(balancer, "stats", None)):
        raise TypeError(f"watch_balancer() takes a LoadBalancer, not {type(balancer).__name__}")
    _metrics_for(registry).balancers.add(balancer)
