"""The read/write router over SQLite files -> metrics, span attributes, log lines."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from scalepatterns.contrib import logging as sp_logging
from scalepatterns.contrib import otel, prometheus
from scalepatterns.routing import LagSampled, ReadWriteRouter, ReplicaEjected, ReplicaReadmitted
from tests.support.models import Article, Base, tables


@pytest.fixture
def router(tmp_path: Path, listeners):
    engines = []
    for name in ("primary", "replica1"):
        engine = sa.create_engine(f"sqlite:///{tmp_path / name}.db")
        Base.metadata.create_all(engine, tables=tables(Article))
        with engine.begin() as conn:
            conn.execute(sa.insert(Article).values(id=1, title="Hello"))
        engines.append(engine)
    router = ReadWriteRouter(engines[0], engines[1:], name="articles", listeners=listeners)
    yield router
    for engine in engines:
        engine.dispose()


def test_statements_counted_by_target_and_reason(router, registry, listeners) -> None:
    with prometheus.instrument(registry, listeners=listeners):
        for _ in range(3):
            with router.sessionmaker()() as session:
                session.get(Article, 1)
        with router.sessionmaker()() as session:
            session.add(Article(id=2, title="New"))
            session.commit()
    samples = {
        (s.labels["target"], s.labels["reason"]): s.value
        for m in registry.collect()
        if m.name == "scalepatterns_router_statements"
        for s in m.samples
        if s.name.endswith("_total")
    }
    replica = next(t for t, r in samples if r == "read")
    assert samples[(replica, "read")] == 3
    assert replica != "primary"
    assert any(target == "primary" for target, _ in samples)
    assert {s for s in samples if s[0] == "primary"} <= {
        ("primary", r) for r in ("write", "flush", "after_write")
    }


def test_replica_rotation_and_lag_gauges(registry, listeners) -> None:
    with prometheus.instrument(registry, listeners=listeners):
        listeners.emit(LagSampled(source="db", replica="r1", lag_bytes=4096, lag_seconds=1.5))
        listeners.emit(LagSampled(source="db", replica="r1", lag_bytes=None, lag_seconds=None))
        listeners.emit(ReplicaEjected(source="db", replica="r1", reason="lag"))
        labels = {"router": "db", "replica": "r1"}
        assert registry.get_sample_value("scalepatterns_router_replica_in_rotation", labels) == 0
        listeners.emit(ReplicaReadmitted(source="db", replica="r1"))
    assert registry.get_sample_value("scalepatterns_router_replica_lag_seconds", labels) == 1.5
    assert registry.get_sample_value("scalepatterns_router_replica_lag_bytes", labels) == 4096
    assert registry.get_sample_value("scalepatterns_router_replica_in_rotation", labels) == 1
    assert (
        registry.get_sample_value(
            "scalepatterns_router_replica_ejections_total", {**labels, "reason": "lag"}
        )
        == 1
    )


def test_route_is_an_attribute_of_the_callers_span(router, provider, exporter, listeners) -> None:
    tracer = provider.get_tracer("tests")
    new_session = router.sessionmaker()
    with (
        otel.instrument(provider, listeners=listeners),
        tracer.start_as_current_span("view"),
        new_session() as session,
    ):
        session.get(Article, 1)
    (span,) = exporter.get_finished_spans()
    assert span.attributes["scalepatterns.router"] == "articles"
    assert span.attributes["scalepatterns.route.reason"] == "read"
    assert span.attributes["scalepatterns.route.target"] != "primary"


def test_ejection_is_a_warning_and_routing_is_quiet(router, listeners, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="scalepatterns.tests")
    with sp_logging.instrument(logging.getLogger("scalepatterns.tests"), listeners=listeners):
        with router.sessionmaker()() as session:
            session.get(Article, 1)
        listeners.emit(ReplicaEjected(source="articles", replica="replica1", reason="unreachable"))
    assert [(r.levelname, r.sp_event, r.sp_replica) for r in caplog.records] == [
        ("WARNING", "ReplicaEjected", "replica1")
    ]
