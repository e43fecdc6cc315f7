"""``scalepatterns shards reshard`` between PostgreSQL databases, with a progress bar."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from scalepatterns.cli import exits, run
from scalepatterns.sharding import HashRing

pytestmark = pytest.mark.postgres

ROWS = 3000


@pytest.fixture
def shard_urls(postgres_url: str, unique_name: str) -> Iterator[dict[str, str]]:
    """Three fresh databases; `orders` placed by ring:s1,s2 on the first two."""
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    names = {f"s{i}": f"{unique_name}_s{i}" for i in (1, 2, 3)}
    base = make_url(postgres_url)
    urls = {
        shard: base.set(database=name).render_as_string(hide_password=False)
        for shard, name in names.items()
    }
    metadata = sa.MetaData()
    orders = sa.Table(
        "orders",
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("customer", sa.String(40), nullable=False),
        sa.Column("total", sa.Numeric(10, 2), nullable=False),
    )
    placed = HashRing(["s1", "s2"])
    try:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        for shard, url in urls.items():
            engine = sa.create_engine(url)
            metadata.create_all(engine)
            rows = [
                {"id": i, "customer": f"c{i % 97}", "total": f"{i % 1000}.{i % 100:02d}"}
                for i in range(ROWS)
                if placed.node_for(i) == shard
            ]
            if rows:
                with engine.begin() as conn:
                    conn.execute(orders.insert(), rows)
            engine.dispose()
        yield urls
    finally:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def ids_on(url: str) -> set[int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.scalars(sa.text("SELECT id FROM orders")))
    finally:
        engine.dispose()


def test_reshard_two_to_three_databases(
    shard_urls: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["shards", "reshard", "--to", "ring:s1,s2,s3", "--table", "orders"]
    argv += ["--key-column", "id", "--batch-size", "200"]
    argv += [a for shard, url in shard_urls.items() for a in ("--shard", f"{shard}={url}")]
    argv += ["--checkpoint", str(tmp_path / "orders.json")]

    assert run([*argv, "--json"]) == exits.FOUND  # the dry run: rows would move
    dry = json.loads(capsys.readouterr().out)
    assert dry["before"]["rows"]["s3"] == 0
    assert dry["before"]["total"] == ROWS
    assert {m["target"] for m in dry["moves"]} == {"s3"}

    assert run([*argv, "--execute", "--json"]) == exits.OK
    done = json.loads(capsys.readouterr().out)
    assert done["verified"] is True
    assert done["after"]["checksum"] == dry["before"]["checksum"]
    assert done["report"]["moved"] == dry["before"]["moving"] == done["after"]["rows"]["s3"]
    target = HashRing(["s1", "s2", "s3"])
    everything: set[int] = set()
    for shard, url in shard_urls.items():
        ids = ids_on(url)
        assert all(target.node_for(i) == shard for i in ids)
        assert not ids & everything
        everything |= ids
    assert everything == set(range(ROWS))
    # and for people: the fields, the routes, the verdict
    assert run(argv) == exits.OK
    assert "nothing to move: every row is on its shard" in capsys.readouterr().out
