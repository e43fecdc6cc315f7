"""``scalepatterns shards plan`` and ``scalepatterns shards reshard``: what a new placement
moves, and moving it (dry run by default, resumable, verified by counts and checksums)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from scalepatterns.cli import exits
from scalepatterns.cli.output import emit, fields, json_option, progress, table
from scalepatterns.cli.settings import engine, named_urls
from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Event, Listeners
from scalepatterns.sharding import HashRing, JumpHash, Placement, Rendezvous, plan_rebalance
from scalepatterns.sharding.events import RowsResharded

__all__ = ["Census", "census", "parse_placement", "shards"]

_SPEC = "KIND:NODES with KIND ring, ketama, jump or rendezvous (ring@VNODES:... for vnodes), "
_SPEC += "NODES comma-separated, with =WEIGHT for ring and rendezvous: ring:a,b,c  ring:a=2,b=1"


def parse_placement(text: str, parameter: str) -> Placement:
    """A placement from ``ring:a,b,c``, ``ring@40:a=2,b=1``, ``ketama:...``, ``jump:...``,
    ``rendezvous:...``."""
    kind, colon, nodes_text = text.partition(":")
    kind, _, vnodes_text = kind.partition("@")
    names = [n.strip() for n in nodes_text.split(",") if n.strip()]
    if not colon or not names or (vnodes_text and not vnodes_text.isdigit()):
        raise ConfigurationError(parameter, text, _SPEC)
    weights: dict[str, float] = {}
    for item in names:
        node, equals, weight = item.partition("=")
        try:
            weights[node] = float(weight) if equals else 1.0
        except ValueError:
            raise ConfigurationError(parameter, text, _SPEC) from None
    weighted = any(w != 1.0 for w in weights.values())
    vnodes = int(vnodes_text) if vnodes_text else None
    if kind in ("ring", "ketama"):
        nodes = weights if weighted else list(weights)
        return HashRing(nodes, vnodes=vnodes, ketama=kind == "ketama")
    if vnodes is None and kind == "rendezvous":
        return Rendezvous(weights if weighted else list(weights))
    if vnodes is None and kind == "jump" and not weighted:
        return JumpHash(list(weights))
    raise ConfigurationError(parameter, text, _SPEC)


@click.group()
def shards() -> None:
    """Moving keys and SQL rows between shard placements."""


def _reflect(engines: Mapping[str, Any], name: str) -> Any:
    import sqlalchemy as sa

    first, eng = next(iter(engines.items()))
    try:
        return sa.Table(name, sa.MetaData(), autoload_with=eng)
    except sa.exc.NoSuchTableError:
        raise ConfigurationError("--table", name, f"a table that exists on shard {first}") from None


def _engines(urls: Mapping[str, str]) -> dict[str, Any]:
    return {name: engine(url, f"--shard {name}") for name, url in urls.items()}


@contextlib.contextmanager
def _disposing(engines: Mapping[str, Any]) -> Iterator[None]:
    try:
        yield
    finally:
        for each in engines.values():
            each.dispose()


def _keys_in(engines: Mapping[str, Any], table: Any, key_column: str) -> Iterator[Any]:
    import sqlalchemy as sa

    if key_column not in table.c:
        raise ConfigurationError("--key-column", key_column, f"a column of {table.name}")
    for eng in engines.values():
        with eng.connect() as conn:
            result = conn.execution_options(yield_per=5000).execute(sa.select(table.c[key_column]))
            yield from (row[0] for row in result)


def _keys_from_file(path: str) -> Iterator[str]:
    with click.open_file(path) as lines:
        yield from (line.rstrip("\n") for line in lines if line.strip())


@shards.command()
@click.option(
    "--from", "before_spec", required=True, metavar="PLACEMENT", help="Today's placement."
)
@click.option("--to", "after_spec", required=True, metavar="PLACEMENT", help="The new placement.")
@click.option("--keys", "keys_file", metavar="FILE", help="Keys, one per line ('-': stdin).")
@click.option(
    "--shard",
    "shard_urls",
    multiple=True,
    callback=named_urls,
    metavar="NAME=URL",
    help="Read the keys from this shard's table instead (repeatable).",
)
@click.option("--table", "table_name", help="With --shard: the table.")
@click.option("--key-column", help="With --shard: the column holding the shard key.")
@json_option
def plan(
    *,
    before_spec: str,
    after_spec: str,
    keys_file: str | None,
    shard_urls: dict[str, str],
    table_name: str | None,
    key_column: str | None,
    as_json: bool,
) -> int:
    """Which keys a placement change moves, from where to where (nothing is changed).

    PLACEMENT is KIND:NODES: ring:a,b,c (ring@VNODES:..., weights as a=2), ketama:...,
    jump:a,b,c, rendezvous:a,b. Keys come from --keys or from the tables (--shard, --table,
    --key-column).
    """
    before = parse_placement(before_spec, "--from")
    after = parse_placement(after_spec, "--to")
    if (keys_file is None) == (not shard_urls):
        raise click.UsageError(
            "give the keys with --keys FILE, or with --shard, --table and --key-column"
        )
    if keys_file is not None:
        result = plan_rebalance(before, after, _keys_from_file(keys_file))
    else:
        if not table_name or not key_column:
            raise click.UsageError("--shard needs --table and --key-column")
        engines = _engines(shard_urls)
        with _disposing(engines):
            tbl = _reflect(engines, table_name)
            result = plan_rebalance(before, after, _keys_in(engines, tbl, key_column))
    routes = sorted(result.routes.items(), key=lambda item: (-item[1], item[0]))
    data = {
        "from": repr(before),
        "to": repr(after),
        "keys": result.total,
        "moved": result.moved,
        "fraction": result.fraction,
        "routes": [{"source": s, "target": t, "keys": n} for (s, t), n in routes],
        "by_target": result.by_target(),
    }

    def human() -> str:
        lines = [str(result)]
        if routes:
            lines.append(table(["from", "to", "keys"], [[s, t, n] for (s, t), n in routes]))
        return "\n".join(lines)

    emit(as_json, data, human)
    return exits.OK


@dataclass
class Census:
    """What the shards hold: rows per shard, rows by primary key across shards (a key on
    two shards is an interrupted copy, counted once), a checksum of those rows that does
    not depend on where they are, and the rows the target placement would move."""

    rows: dict[str, int] = field(default_factory=dict)
    distinct: int = 0
    on_two_shards: int = 0
    checksum: str = ""
    moving: Counter[tuple[str, str]] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "total": self.distinct,
            "on_two_shards": self.on_two_shards,
            "checksum": self.checksum,
            "moving": sum(self.moving.values()),
        }


def census(engines: Mapping[str, Any], table: Any, key_column: str, target: Placement) -> Census:
    """Read every row of `table` on every shard once (in primary-key order, streamed)."""
    import sqlalchemy as sa

    pk = next(iter(table.primary_key.columns))
    digests: dict[Any, int] = {}
    found = Census()
    for shard, eng in engines.items():
        count = 0
        with eng.connect() as conn:
            result = conn.execution_options(yield_per=2000).execute(sa.select(table).order_by(pk))
            for row in result:
                count += 1
                values = row._mapping
                key = values[pk.name]
                if key in digests:
                    found.on_two_shards += 1
                else:
                    row_hash = hashlib.sha256(repr(tuple(row)).encode()).digest()
                    digests[key] = int.from_bytes(row_hash[:16], "big")
                owner = target.node_for(values[key_column])
                if owner != shard:
                    found.moving[(shard, owner)] += 1
        found.rows[shard] = count
    found.distinct = len(digests)
    found.checksum = f"{sum(digests.values()) % (1 << 128):032x}"
    return found


class _Checkpoint(dict[str, Any]):
    """The resharder's checkpoint, kept in a JSON file (written whole, then renamed)."""

    def __init__(self, path: Path) -> None:
        super().__init__(json.loads(path.read_text()) if path.exists() else {})
        self.path = path

    def save(self) -> None:
        partial = self.path.with_suffix(self.path.suffix + ".partial")
        partial.write_text(json.dumps(self, default=str))
        os.replace(partial, self.path)


@shards.command()
@click.option(
    "--shard",
    "shard_urls",
    multiple=True,
    required=True,
    callback=named_urls,
    metavar="NAME=URL",
    help="Every old and new shard's database (repeatable).",
)
@click.option("--to", "target_spec", required=True, metavar="PLACEMENT", help="The new placement.")
@click.option("--table", "table_name", required=True, help="The table to move.")
@click.option("--key-column", required=True, help="The column holding the shard key.")
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True)
@click.option(
    "--checkpoint",
    "checkpoint_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where progress is kept [default: reshard-TABLE.checkpoint.json].",
)
@click.option("--execute", is_flag=True, help="Move the rows (without it: a dry run).")
@json_option
def reshard(
    *,
    shard_urls: dict[str, str],
    target_spec: str,
    table_name: str,
    key_column: str,
    batch_size: int,
    checkpoint_path: Path | None,
    execute: bool,
    as_json: bool,
) -> int:
    """Move the rows of a table whose shard changes under the new placement.

    Without --execute, a dry run: counts, checksum and the rows that would move (exit 1
    when some would). With it, rows are copied, read back, compared and only then deleted
    from their old shard, batch by batch; progress is kept in the checkpoint file, so an
    interrupted run resumes where it stopped when run again (the file is removed once the
    run completes). At the end the rows are counted and checksummed again: the same
    total and checksum prove nothing was lost or duplicated. Pause writes to the table
    while it runs.
    """
    from scalepatterns.sharding import Resharder

    target = parse_placement(target_spec, "--to")
    if set(target.nodes) - set(shard_urls):
        names = ", ".join(shard_urls)
        raise ConfigurationError("--to", target_spec, f"a placement of --shard names ({names})")
    engines = _engines(shard_urls)
    with _disposing(engines):
        tbl = _reflect(engines, table_name)
        if key_column not in tbl.c:
            raise ConfigurationError("--key-column", key_column, f"a column of {table_name}")
        before = census(engines, tbl, key_column, target)
        data: dict[str, Any] = {
            "table": table_name,
            "target": repr(target),
            "dry_run": not execute,
            "before": before.as_dict(),
            "moves": [
                {"source": s, "target": t, "rows": n} for (s, t), n in sorted(before.moving.items())
            ],
        }
        if not execute:
            emit(as_json, data, lambda: _describe(data))
            return exits.FOUND if before.moving else exits.OK
        path = checkpoint_path or Path(f"reshard-{table_name}.checkpoint.json")
        checkpoint = _Checkpoint(path)
        listeners = Listeners()
        total = sum(before.moving.values())
        with progress(total, f"resharding {table_name}", show=not as_json) as bar:

            def moved(event: Event) -> None:
                if isinstance(event, RowsResharded):
                    bar.update(event.rows)
                    checkpoint.save()

            listeners.add(moved, RowsResharded)
            resharder = Resharder(
                engines,
                target,
                tbl,
                key_column,
                batch_size=batch_size,
                checkpoint=checkpoint,
                listeners=listeners,
            )
            try:
                report = resharder.run()
            except BaseException:
                checkpoint.save()
                click.echo(
                    f"stopped: progress kept in {path}; run the same command to resume",
                    err=True,
                )
                raise
        after = census(engines, tbl, key_column, target)
        verified = (
            after.distinct == before.distinct
            and after.checksum == before.checksum
            and not after.moving
            and not after.on_two_shards
        )
        if verified:
            path.unlink(missing_ok=True)
        else:
            checkpoint.save()
        data["report"] = {
            "scanned": report.scanned,
            "moved": report.moved,
            "batches": report.batches,
        }
        data["after"] = after.as_dict()
        data["verified"] = verified
    emit(as_json, data, lambda: _describe(data))
    if not verified:
        click.echo(
            "error: the rows after the run differ from the rows before it (see the counts "
            "and checksums); writes during the run, or a conflict to resolve by hand",
            err=True,
        )
        return exits.FAILED
    return exits.OK


def _describe(data: Mapping[str, Any]) -> str:
    def state(label: str, c: Mapping[str, Any]) -> list[tuple[str, object]]:
        per_shard = ", ".join(f"{s} {n}" for s, n in c["rows"].items())
        pairs: list[tuple[str, object]] = [
            (f"{label} rows", f"{c['total']} ({per_shard})"),
            (f"{label} checksum", c["checksum"]),
        ]
        if c["on_two_shards"]:
            pairs.append((f"{label} on two shards", f"{c['on_two_shards']} (an interrupted copy)"))
        return pairs

    pairs = [("table", data["table"]), ("target", data["target"]), *state("before", data["before"])]
    lines = [fields(pairs)]
    moves = [[m["source"], m["target"], m["rows"]] for m in data["moves"]]
    if moves:
        lines.append(table(["from", "to", "rows"], moves))
    if data["dry_run"]:
        count = data["before"]["moving"]
        lines.append(
            f"dry run: {count} row(s) would move; run again with --execute"
            if count
            else "nothing to move: every row is on its shard"
        )
        return "\n".join(lines)
    report = data["report"]
    lines.append(
        fields(
            [
                ("moved", f"{report['moved']} rows in {report['batches']} batches"),
                *state("after", data["after"]),
                (
                    "verified",
                    "same rows and checksum, none misplaced" if data["verified"] else "NO",
                ),
            ]
        )
    )
    return "\n".join(lines)
