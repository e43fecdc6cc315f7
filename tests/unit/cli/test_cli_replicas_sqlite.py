"""``scalepatterns replicas check`` on SQLite: liveness only (no WAL), and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalepatterns.cli import exits, run


def test_reachable_replicas_pass_and_an_unreachable_one_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    primary = f"sqlite:///{tmp_path}/primary.db"
    good = f"sqlite:///{tmp_path}/replica.db"
    argv = ["replicas", "check", "--primary", primary, "--replica", f"r1={good}", "--json"]
    assert run(argv) == exits.OK
    (row,) = json.loads(capsys.readouterr().out)["replicas"]
    assert (row["name"], row["in_rotation"], row["in_recovery"], row["warning"]) == (
        "r1",
        True,
        None,  # SQLite has no recovery to ask about
        None,
    )
    missing = f"sqlite:///{tmp_path}/no/such/dir/replica.db"
    assert run([*argv, "--replica", f"r2={missing}"]) == exits.FOUND
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["replicas"]}
    assert rows["r1"]["in_rotation"] is True
    assert (rows["r2"]["in_rotation"], rows["r2"]["ejected_for"]) == (False, "unreachable")
    assert rows["r2"]["warning"] == "out of rotation (unreachable)"


def test_replica_options_are_name_equals_url(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["replicas", "check", "--primary", "sqlite://", "--replica", "sqlite://"]
    assert run(argv) == exits.USAGE
    assert "NAME=URL" in capsys.readouterr().err
