"""The tour with Prometheus metrics: every chapter runs instrumented, /metrics is served.

    python examples/observability_metrics.py            # serve on :9464 for 60 s
    python examples/observability_metrics.py --once     # run, print the scrape, exit
    python examples/observability_metrics.py --port 0 --seconds 300

Point Prometheus at ``localhost:9464`` and import ``examples/grafana-dashboard.json`` in
Grafana to see the blocks' counters and histograms. The tour's chapters use their own
`Listeners` registries (so their printed counts stay exact); this script hands each one
a registry that is instrumented as it is created, and instruments the process-wide
`default_listeners` too.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client import REGISTRY, start_http_server

from scalepatterns.contrib import prometheus
from scalepatterns.events import Listeners, default_listeners

TOUR = Path(__file__).resolve().parent / "tour"


class InstrumentedListeners(Listeners):
    """A `Listeners` registry with the Prometheus listener already on it."""

    def __init__(self) -> None:
        super().__init__()
        prometheus.instrument(REGISTRY, listeners=self)


def run_tour() -> None:
    sys.path.insert(0, str(TOUR))
    names = sorted(
        (p.stem for p in TOUR.glob("ch*_*.py")), key=lambda name: int(name[2:].split("_")[0])
    )
    for name in names:
        chapter = importlib.import_module(name)
        if hasattr(chapter, "Listeners"):
            chapter.Listeners = InstrumentedListeners
        print(f"== {chapter.TITLE} ==")
        chapter.run()


def _ours(line: str) -> bool:
    return line.startswith("scalepatterns_") and "_created{" not in line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=9464, help="0 picks a free port")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to serve")
    parser.add_argument("--once", action="store_true", help="print the scrape and exit")
    args = parser.parse_args(argv)

    handle = prometheus.instrument(REGISTRY)  # components on default_listeners
    server, thread = start_http_server(args.port, addr="127.0.0.1")
    port = server.server_address[1]
    try:
        run_tour()
        url = f"http://127.0.0.1:{port}/metrics"
        if args.once:
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
            print("\n".join(line for line in text.splitlines() if _ours(line)))
            return 0
        print(f"\nserving {url} for {args.seconds:.0f} s (Ctrl-C to stop)")
        with contextlib.suppress(KeyboardInterrupt):
            time.sleep(args.seconds)
        return 0
    finally:
        handle.uninstrument()
        server.shutdown()
        thread.join(timeout=5)
        default_listeners.remove(handle.listener)


if __name__ == "__main__":
    sys.exit(main())
