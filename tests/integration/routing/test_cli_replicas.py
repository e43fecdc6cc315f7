"""``scalepatterns replicas check`` against a streaming replica, a primary posing as one, and
a dead one (the session's throw-away cluster, and the shared PostgreSQL)."""

from __future__ import annotations

import json

import pytest

from scalepatterns.cli import exits, run
from tests.support.postgres_cluster import PostgresCluster
from tests.support.servers import free_cluster_port

pytestmark = pytest.mark.postgres


def test_a_streaming_replica_passes(
    pg_cluster: PostgresCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["replicas", "check", "--primary", pg_cluster.primary_url]
    assert run([*argv, "--replica", f"standby={pg_cluster.replica_url}", "--json"]) == exits.OK
    (row,) = json.loads(capsys.readouterr().out)["replicas"]
    assert (row["name"], row["in_rotation"], row["in_recovery"], row["warning"]) == (
        "standby",
        True,
        True,
        None,
    )
    assert row["lag_bytes"] is not None
    assert row["lag_seconds"] is not None


def test_a_primary_listed_as_replica_and_a_dead_one_exit_1(
    pg_cluster: PostgresCluster, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = pg_cluster.url(free_cluster_port())
    argv = ["replicas", "check", "--primary", pg_cluster.primary_url, "--timeout", "2"]
    argv += ["--replica", f"standby={pg_cluster.replica_url}"]
    argv += ["--replica", f"shared={postgres_url}", "--replica", f"gone={dead}"]
    assert run([*argv, "--json"]) == exits.FOUND
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["replicas"]}
    assert rows["standby"]["warning"] is None
    assert rows["shared"]["in_recovery"] is False
    assert rows["shared"]["warning"] == "not in recovery: this server is a primary, not a replica"
    assert (rows["gone"]["in_rotation"], rows["gone"]["ejected_for"]) == (False, "unreachable")
    assert run(argv) == exits.FOUND
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["replica", "in", "rotation"]
    assert "not in recovery" in table
