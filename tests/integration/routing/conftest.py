"""Throw-away PostgreSQL clusters: a primary + streaming replica shared by the session, and a
two-node cluster that fails over, started once per module that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import services
from tests.support.postgres_cluster import PostgresCluster


def _started(cluster: PostgresCluster) -> PostgresCluster:
    try:
        return cluster.start()
    except (RuntimeError, TimeoutError, OSError, KeyError) as exc:
        cluster.stop()
        reason = f"could not start a throw-away PostgreSQL primary + replica: {exc}"
        if services.services_required():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """Our own primary and replica: tests may pause replay and kill the replica."""
    cluster = _started(PostgresCluster())
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def failover_cluster() -> Iterator[PostgresCluster]:
    """A primary and a standby that tests kill and promote; both log the writes they receive."""
    cluster = _started(PostgresCluster(log_writes=True))
    try:
        yield cluster
    finally:
        cluster.stop()
