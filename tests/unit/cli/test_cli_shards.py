"""``scalepatterns shards plan|reshard`` on SQLite shards: dry run, move, verify, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from scalepatterns.cli import exits, run
from scalepatterns.cli.shards import census, parse_placement
from scalepatterns.errors import ConfigurationError
from scalepatterns.sharding import HashRing, JumpHash, Rendezvous, Resharder, plan_rebalance

ROWS = 600


@pytest.fixture
def shard_files(tmp_path: Path) -> dict[str, str]:
    """Shards a and b holding ROWS accounts placed by ring:a,b; shard c empty."""
    urls = {name: f"sqlite:///{tmp_path}/{name}.db" for name in "abc"}
    metadata = sa.MetaData()
    accounts = sa.Table(
        "accounts",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(100)),
        sa.Column("balance", sa.Integer),
    )
    engines = {name: sa.create_engine(url) for name, url in urls.items()}
    before = HashRing(["a", "b"])
    for engine in engines.values():
        metadata.create_all(engine)
    for name, engine in engines.items():
        rows = [
            {"id": i, "email": f"user{i}@example.com", "balance": i}
            for i in range(ROWS)
            if before.node_for(i) == name
        ]
        if rows:
            with engine.begin() as conn:
                conn.execute(accounts.insert(), rows)
    for engine in engines.values():
        engine.dispose()
    return urls


def shard_args(urls: dict[str, str]) -> list[str]:
    return [arg for name, url in urls.items() for arg in ("--shard", f"{name}={url}")]


def reshard(urls: dict[str, str], *extra: str) -> list[str]:
    return [
        "shards",
        "reshard",
        *shard_args(urls),
        "--to",
        "ring:a,b,c",
        "--table",
        "accounts",
        "--key-column",
        "id",
        "--json",
        *extra,
    ]


def rows_on(url: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text("SELECT * FROM accounts ORDER BY id"))]
    finally:
        engine.dispose()


def test_placement_specs() -> None:
    assert repr(parse_placement("ring:a,b,c", "--to")) == repr(HashRing(["a", "b", "c"]))
    assert repr(parse_placement("ring@40:a=2,b=1", "--to")) == repr(
        HashRing({"a": 2.0, "b": 1.0}, vnodes=40)
    )
    assert repr(parse_placement("ketama:a,b", "--to")) == repr(HashRing(["a", "b"], ketama=True))
    assert repr(parse_placement("jump:a,b", "--to")) == repr(JumpHash(["a", "b"]))
    assert repr(parse_placement("rendezvous:a,b=3", "--to")) == repr(
        Rendezvous({"a": 1.0, "b": 3.0})
    )
    for bad in ("a,b", "ring:", "ring@x:a", "jump:a=2", "cube:a,b", "ring:a=heavy"):
        with pytest.raises(ConfigurationError, match="--to"):
            parse_placement(bad, "--to")


def test_plan_from_a_key_file_matches_plan_rebalance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = [f"user:{i}" for i in range(2000)]
    (tmp_path / "keys").write_text("\n".join(keys) + "\n")
    argv = ["shards", "plan", "--from", "ring:a,b,c", "--to", "ring:a,b,c,d"]
    assert run([*argv, "--keys", str(tmp_path / "keys"), "--json"]) == exits.OK
    printed = json.loads(capsys.readouterr().out)
    expected = plan_rebalance(HashRing(["a", "b", "c"]), HashRing(["a", "b", "c", "d"]), keys)
    assert (printed["keys"], printed["moved"]) == (2000, expected.moved)
    assert {(r["source"], r["target"]): r["keys"] for r in printed["routes"]} == expected.routes
    assert set(printed["by_target"]) == {"d"}


def test_plan_reads_the_keys_from_the_tables(
    shard_files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["shards", "plan", "--from", "ring:a,b", "--to", "ring:a,b,c", *shard_args(shard_files)]
    assert run([*argv, "--table", "accounts", "--key-column", "id", "--json"]) == exits.OK
    printed = json.loads(capsys.readouterr().out)
    expected = plan_rebalance(HashRing(["a", "b"]), HashRing(["a", "b", "c"]), range(ROWS))
    assert (printed["keys"], printed["moved"]) == (ROWS, expected.moved)


def test_plan_needs_exactly_one_source_of_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["shards", "plan", "--from", "ring:a", "--to", "ring:a,b"]) == exits.USAGE
    assert "--keys FILE" in capsys.readouterr().err


def test_reshard_is_a_dry_run_by_default(
    shard_files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    before = {name: rows_on(url) for name, url in shard_files.items()}
    assert run(reshard(shard_files)) == exits.FOUND  # rows would move
    printed = json.loads(capsys.readouterr().out)
    assert printed["dry_run"] is True
    moving = plan_rebalance(HashRing(["a", "b"]), HashRing(["a", "b", "c"]), range(ROWS))
    assert printed["before"]["moving"] == moving.moved
    assert {(m["source"], m["target"]): m["rows"] for m in printed["moves"]} == moving.routes
    assert {name: rows_on(url) for name, url in shard_files.items()} == before  # nothing moved


def test_reshard_moves_verifies_and_removes_its_checkpoint(
    shard_files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    everything = sorted(row for url in shard_files.values() for row in rows_on(url))
    checkpoint = tmp_path / "progress.json"
    assert run(reshard(shard_files, "--execute", "--checkpoint", str(checkpoint))) == exits.OK
    printed = json.loads(capsys.readouterr().out)
    assert printed["verified"] is True
    assert printed["before"]["checksum"] == printed["after"]["checksum"]
    assert printed["after"]["total"] == ROWS
    assert printed["after"]["moving"] == 0
    assert printed["report"]["moved"] == printed["before"]["moving"] > 0
    assert not checkpoint.exists()
    target = HashRing(["a", "b", "c"])
    for name, url in shard_files.items():
        assert all(target.node_for(row[0]) == name for row in rows_on(url))
    assert sorted(row for url in shard_files.values() for row in rows_on(url)) == everything
    # run again: nothing left to move
    assert run(reshard(shard_files)) == exits.OK


def test_an_interrupted_reshard_resumes_from_its_checkpoint(
    shard_files: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    everything = sorted(row for url in shard_files.values() for row in rows_on(url))
    checkpoint = tmp_path / "progress.json"
    deletes = 0
    real_delete = Resharder._delete_source

    def crash_on_third(self: Resharder, source: str, target: str, group: list) -> None:
        nonlocal deletes
        deletes += 1
        if deletes == 3:  # between a copy and its delete: the rows are on both shards
            raise KeyboardInterrupt
        real_delete(self, source, target, group)

    monkeypatch.setattr(Resharder, "_delete_source", crash_on_third)
    argv = reshard(shard_files, "--execute", "--checkpoint", str(checkpoint), "--batch-size", "50")
    assert run(argv) == exits.INTERRUPTED
    assert "run the same command to resume" in capsys.readouterr().err
    saved = json.loads(checkpoint.read_text())
    assert saved["target"] == repr(HashRing(["a", "b", "c"]))
    assert saved["last"]

    monkeypatch.setattr(Resharder, "_delete_source", real_delete)
    assert run(reshard(shard_files, "--checkpoint", str(checkpoint))) == exits.FOUND
    dry = json.loads(capsys.readouterr().out)
    assert dry["before"]["on_two_shards"] > 0  # the interrupted batch, copied not deleted
    assert dry["before"]["total"] == ROWS

    assert run(argv) == exits.OK
    done = json.loads(capsys.readouterr().out)
    assert done["verified"] is True
    assert done["after"]["on_two_shards"] == 0
    assert sorted(row for url in shard_files.values() for row in rows_on(url)) == everything
    assert not checkpoint.exists()


def test_census_checksum_ignores_where_rows_are(shard_files: dict[str, str]) -> None:
    engines = {name: sa.create_engine(url) for name, url in shard_files.items()}
    table = sa.Table("accounts", sa.MetaData(), autoload_with=engines["a"])
    first = census(engines, table, "id", HashRing(["a", "b", "c"]))
    with engines["a"].begin() as conn:  # one balance changes: the checksum does too
        conn.execute(sa.text("UPDATE accounts SET balance = balance + 1 WHERE id = 0"))
    second = census(engines, table, "id", HashRing(["a", "b", "c"]))
    for engine in engines.values():
        engine.dispose()
    assert first.distinct == second.distinct == ROWS
    assert first.checksum != second.checksum
    assert sum(first.rows.values()) == ROWS
    assert first.rows["c"] == 0


def test_a_missing_table_or_column_is_a_usage_error(
    shard_files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["shards", "reshard", *shard_args(shard_files), "--to", "ring:a,b,c"]
    assert run([*argv, "--table", "nope", "--key-column", "id"]) == exits.USAGE
    assert "nope" in capsys.readouterr().err
    assert run([*argv, "--table", "accounts", "--key-column", "nope"]) == exits.USAGE
    assert run([*argv[:-2], "--to", "ring:a,b,d", "--table", "accounts", "--key-column", "id"]) == (
        exits.USAGE
    )
