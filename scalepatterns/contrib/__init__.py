"""Adapters that turn the blocks' events into what operators use.

- `scalepatterns.contrib.prometheus`: counters, histograms and gauges (extra
  ``prometheus``);
- `scalepatterns.contrib.otel`: OpenTelemetry spans and span events, and W3C trace context
  carried in queue message headers (extra ``otel``);
- `scalepatterns.contrib.logging`: structured log lines through the standard `logging`
  module, quiet by default.

Each ``instrument(...)`` registers ONE listener on a `Listeners` registry (the process-wide
`default_listeners` unless given one) and returns an `Instrumentation` whose
``uninstrument()`` removes it. The listener looks the event's type up in a table, so an
event it does not map costs one dictionary miss. Importing this package imports neither
prometheus_client nor opentelemetry; ``instrument()`` loads them on first use.
"""

from __future__ import annotations

from scalepatterns.contrib._dispatch import Dispatcher, Instrumentation

__all__ = ["Dispatcher", "Instrumentation"]
