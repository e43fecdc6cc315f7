"""Observability: what instrumentation costs on a hot path.

The cache hit path (once the cache block is present; a shard lookup otherwise, which
also emits one event per call) with no listener, with the Prometheus listener, the
OpenTelemetry listener (no current span) and the structured-logging listener (default,
quiet) -- and with a registry that was instrumented and then uninstrumented, to show the
uninstrumented cost is unchanged (one attribute check).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from benchmarks.harness import Bench
from scalepatterns.contrib import logging as sp_logging
from scalepatterns.contrib import otel, prometheus
from scalepatterns.events import Event, Listeners
from scalepatterns.resilience import BreakerRejected


def _hot_path(listeners: Listeners) -> tuple[str, Callable[[], object]]:
    if importlib.util.find_spec("scalepatterns.cache") is not None:
        from scalepatterns.cache import Cache

        cache = Cache(namespace="bench", listeners=listeners)

        @cache.cached(ttl=3600)
        def price(item: int) -> int:
            return item * 2

        price(7)
        return "in-memory cache hit", lambda: price(7)
    from scalepatterns.sharding import HashRing, ShardRouter

    router = ShardRouter(HashRing(["s1", "s2", "s3"]), {"s1": 1, "s2": 2, "s3": 3},
                         listeners=listeners)  # fmt: skip
    return "shard lookup (router.for_key)", lambda: router.for_key("user-42")


def run(bench: Bench) -> None:
    quiet = Listeners()
    removed = Listeners()
    prometheus.instrument(CollectorRegistry(), listeners=removed).uninstrument()
    with_noop = Listeners()
    with_noop.add(lambda event: None)
    with_prometheus = Listeners()
    prometheus.instrument(CollectorRegistry(), listeners=with_prometheus)
    with_otel = Listeners()
    otel.instrument(TracerProvider(), listeners=with_otel)
    with_logging = Listeners()
    silent = logging.getLogger("benchmarks.observability")
    sp_logging.instrument(silent, listeners=with_logging)
    with_all = Listeners()
    prometheus.instrument(CollectorRegistry(), listeners=with_all)
    otel.instrument(TracerProvider(), listeners=with_all)
    sp_logging.instrument(silent, listeners=with_all)

    title, _ = _hot_path(quiet)
    bench.compare(
        f"instrumentation cost: {title}",
        {
            "no listener": _hot_path(quiet)[1],
            "no listener (instrumented, then uninstrumented)": _hot_path(removed)[1],
            "a no-op listener (the event is built and emitted)": _hot_path(with_noop)[1],
            "scalepatterns Prometheus listener": _hot_path(with_prometheus)[1],
            "scalepatterns OpenTelemetry listener": _hot_path(with_otel)[1],
            "scalepatterns logging listener (quiet default)": _hot_path(with_logging)[1],
            "scalepatterns all three listeners": _hot_path(with_all)[1],
        },
        baseline="no listener",
        number=50_000,
        target="uninstrumented cost unchanged (1.00x); report the listeners' cost",
        note=(
            "any listener makes the block build and emit its event (the no-op row); the "
            "OpenTelemetry and logging listeners map no hit-path event: a dict miss"
        ),
    )

    mapped = BreakerRejected(source="payments", retry_after=1.0)
    unmapped = Event(source="payments")
    prom = prometheus.instrument(CollectorRegistry(), listeners=Listeners()).listener

    def noop(event: Event) -> None:
        return None

    bench.compare(
        "one event handed to a listener (event built beforehand)",
        {
            "no-op function (floor)": lambda: noop(mapped),
            "scalepatterns Prometheus listener, mapped event (counter +1)": lambda: prom(mapped),
            "scalepatterns Prometheus listener, unmapped event (dict miss)": lambda: prom(unmapped),
        },
        baseline="no-op function (floor)",
        number=100_000,
        target="report",
        note="the dispatch is one dict lookup; a mapped event adds a cached child's inc()",
    )
