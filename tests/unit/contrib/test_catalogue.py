"""The docs' catalogue, the Grafana dashboard and the example agree with the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from scalepatterns.contrib import prometheus
from tests.support.examples import run_example

ROOT = Path(__file__).resolve().parents[3]
DOCS = (ROOT / "docs" / "observability.md").read_text()
DOCUMENTED = set(re.findall(r"^\| `(scalepatterns_\w+)` \|", DOCS, re.M))


def test_the_docs_catalogue_lists_exactly_the_metrics() -> None:
    registry = CollectorRegistry()
    prometheus.instrument(registry).uninstrument()
    names = set(prometheus.metric_names(registry)) | {"scalepatterns_shard_lookup_skew_ratio"}
    assert names == DOCUMENTED


def test_dashboard_queries_documented_metrics() -> None:
    dashboard = json.loads((ROOT / "examples" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    used = {re.sub(r"_bucket$", "", m) for e in exprs for m in re.findall(r"scalepatterns_\w+", e)}
    assert used - DOCUMENTED == set()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_example_serves_the_tours_metrics() -> None:
    result = run_example("observability_metrics.py", "--once", "--port", "0", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    scraped = {
        line.split("{")[0]
        for line in result.stdout.splitlines()
        if line.startswith("scalepatterns_")
    }
    expected = {
        "scalepatterns_breaker_state",
        "scalepatterns_breaker_transitions_total",
        "scalepatterns_retry_attempts_total",
        "scalepatterns_balancer_ejections_total",
        "scalepatterns_shard_lookups_total",
        "scalepatterns_shard_lookup_skew_ratio",
        "scalepatterns_router_statements_total",
        "scalepatterns_cache_hits_total",
        "scalepatterns_cache_misses_total",
        "scalepatterns_cache_load_duration_seconds_count",
        "scalepatterns_limiter_allowed_total",
        "scalepatterns_limiter_rejected_total",
        "scalepatterns_queue_throttles_total",
        "scalepatterns_queue_published_messages_total",
        "scalepatterns_queue_acked_messages_total",
        "scalepatterns_queue_handler_duration_seconds_count",
    }
    assert expected <= scraped, expected - scraped
