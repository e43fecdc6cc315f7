"""A throw-away PostgreSQL primary + streaming replica, started once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import services
from tests.support.postgres_cluster import PostgresCluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """Our own primary and replica: tests may pause replay and kill the replica."""
    cluster = PostgresCluster()
    try:
        cluster.start()
    except (RuntimeError, TimeoutError, OSError, KeyError) as exc:
        cluster.stop()
        reason = f"could not start a throw-away PostgreSQL primary + replica: {exc}"
        if services.services_required():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        yield cluster
    finally:
        cluster.stop()
