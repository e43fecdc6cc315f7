"""`Resharder`: moves the rows whose shard changed to their new shard, verified, resumable.

Imports SQLAlchemy, so `scalepatterns.sharding` loads this module only on first use.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from scalepatterns._deps import require
from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.sharding.errors import ReshardError
from scalepatterns.sharding.events import RowsResharded
from scalepatterns.sharding.placement import Placement

sa = require("sqlalchemy", extra="sqlalchemy", feature="Resharder")

__all__ = ["ReshardReport", "Resharder"]


@dataclass
class ReshardReport:
    """What one `Resharder.run` did.

    Attributes:
        scanned: rows read from the source shards.
        moved: rows copied to their new shard, verified and deleted from the old one.
        batches: batches processed.
        routes: ``{(source, target): rows}``.
    """

    scanned: int = 0
    moved: int = 0
    batches: int = 0
    routes: dict[tuple[str, str], int] | None = None


class Resharder:
    """Copies the rows of a table whose key moved under a new placement to their new shard.

    For each shard, rows are read in primary-key order, `batch_size` at a time. The rows
    whose key `target` places on another shard are inserted there (rows already present,
    from an interrupted run, are skipped), read back and compared with the source rows,
    and only when the count and every value match are they deleted from the source. The
    last primary key scanned per shard is saved in `checkpoint` after each batch, so a run
    that stopped anywhere can be repeated or resumed: no row is lost, none is duplicated.

    Rows written to a moving key while a run is in progress are not covered: pause writes
    to the table (or route them with the new placement and re-run) during resharding.

    Args:
        engines: ``{shard id: Engine}`` for every old and new shard.
        target: the placement rows should end up under.
        table: the `Table` to move (it must exist on every shard, with a one-column
            primary key).
        key_column: the column holding the shard key.
        batch_size: rows read per batch.
        checkpoint: where progress is kept between runs (a dict, or any mutable mapping
            persisted by the caller, holding JSON-friendly values); default a fresh dict.
            A checkpoint belongs to one target placement: one made toward another (other
            nodes, weights, vnodes or kind) is refused; start each resharding with an
            empty one.
    """

    def __init__(
        self,
        engines: Mapping[str, Any],
        target: Placement,
        table: Any,
        key_column: str,
        *,
        batch_size: int = 500,
        checkpoint: MutableMapping[str, Any] | None = None,
        listeners: Listeners | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError("batch_size", batch_size, "an int >= 1")
        primary = list(table.primary_key.columns)
        if len(primary) != 1:
            raise ConfigurationError("table", table.name, "a table with a one-column primary key")
        if key_column not in table.c:
            raise ConfigurationError("key_column", key_column, f"a column of {table.name}")
        missing = [node for node in target.nodes if node not in engines]
        if missing:
            raise ConfigurationError("engines", sorted(engines), f"an engine for {missing}")
        _refuse_shared_databases(engines)
        self.engines = dict(engines)
        self.target = target
        self.table = table
        self.key_column = key_column
        self.batch_size = batch_size
        self.checkpoint: MutableMapping[str, Any] = {} if checkpoint is None else checkpoint
        self._pk = primary[0]
        self._listeners = default_listeners if listeners is None else listeners

    def run(self) -> ReshardReport:
        """Move every misplaced row; safe to call again after an interruption.

        Raises:
            ConfigurationError: `checkpoint` was made by a run toward another placement.
            ReshardError: a copied row differs on the target (nothing was deleted).
        """
        # The placement's repr (type, nodes, weights, vnodes): a checkpoint made toward any
        # other placement would skip rows that now move.
        target = repr(self.target)
        recorded = self.checkpoint.setdefault("target", target)
        if recorded != target:
            raise ConfigurationError(
                "checkpoint", recorded, f"a checkpoint of a run toward {target} (or an empty one)"
            )
        self.checkpoint.setdefault("last", {})
        report = ReshardReport(routes={})
        for shard in self.engines:
            while self._batch(shard, report):
                pass
        return report

    def _batch(self, shard: str, report: ReshardReport) -> bool:
        table, pk = self.table, self._pk
        query = sa.select(table).order_by(pk).limit(self.batch_size)
        last = self.checkpoint["last"].get(shard)
        if last is not None:
            query = query.where(pk > last)
        with self.engines[shard].connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        if not rows:
            return False
        moving: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            owner = self.target.node_for(row[self.key_column])
            if owner != shard:
                moving.setdefault(owner, []).append(row)
        for target, group in moving.items():
            self._copy(shard, target, group)
            self._delete_source(shard, target, group)
            assert report.routes is not None
            report.routes[(shard, target)] = report.routes.get((shard, target), 0) + len(group)
            report.moved += len(group)
            if self._listeners.active:
                self._listeners.emit(
                    RowsResharded(
                        source="Resharder", from_shard=shard, to_shard=target, rows=len(group)
                    )
                )
        report.scanned += len(rows)
        report.batches += 1
        self.checkpoint["last"][shard] = rows[-1][pk.name]
        return True

    def _copy(self, source: str, target: str, group: list[dict[str, Any]]) -> None:
        table, pk = self.table, self._pk
        ids = [row[pk.name] for row in group]
        with self.engines[target].begin() as conn:
            present = set(conn.scalars(sa.select(pk).where(pk.in_(ids))))
            fresh = [row for row in group if row[pk.name] not in present]
            if fresh:
                conn.execute(sa.insert(table), fresh)
        with self.engines[target].connect() as conn:
            copied = {
                row._mapping[pk.name]: dict(row._mapping)
                for row in conn.execute(sa.select(table).where(pk.in_(ids)))
            }
        if len(copied) != len(group):
            raise ReshardError(
                source, target, f"{len(copied)} of {len(group)} rows present after the copy"
            )
        for row in group:
            if copied[row[pk.name]] != row:
                raise ReshardError(
                    source,
                    target,
                    f"row {pk.name}={row[pk.name]!r} differs on the target; resolve it by hand",
                )

    def _delete_source(self, source: str, target: str, group: list[dict[str, Any]]) -> None:
        pk = self._pk
        ids = [row[pk.name] for row in group]
        with self.engines[source].begin() as conn:
            conn.execute(sa.delete(self.table).where(pk.in_(ids)))


def _refuse_shared_databases(engines: Mapping[str, Any]) -> None:
    """Two shard ids on one database would make every row "already there" on its new
    shard, and the delete from the old one would remove the only copy."""
    seen: dict[tuple[Any, ...], str] = {}
    for shard, engine in engines.items():
        url = engine.url
        schemas = engine.get_execution_options().get("schema_translate_map")
        place = (
            url.get_backend_name(),
            url.host,
            url.port,
            url.database,
            repr(sorted((schemas or {}).items(), key=repr)),
        )
        if place in seen:
            raise ConfigurationError(
                "engines",
                f"{seen[place]} and {shard}",
                "one database per shard id (these two reach the same one: resharding "
                "between them would delete rows it believes copied)",
            )
        seen[place] = shard
