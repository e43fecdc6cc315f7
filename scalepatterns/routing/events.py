"""Events the read/write router emits (see `scalepatterns.events`)."""

from __future__ import annotations

from dataclasses import dataclass

from scalepatterns.events import Event
from scalepatterns.routing.timeline import Timeline

__all__ = ["LagSampled", "ReplicaEjected", "ReplicaReadmitted", "RouteDecided", "TimelineChanged"]


@dataclass(frozen=True, slots=True)
class RouteDecided(Event):
    """A statement was sent to `target` (``"primary"`` or a replica's name) for `reason`.

    Reasons: ``"write"``, ``"flush"``, ``"for_update"``, ``"after_write"`` (the transaction
    or session already wrote), ``"forced"`` (`force_primary`), ``"token"`` (no replica has
    reached the client's token yet), ``"sticky"`` (time-based stickiness after a write),
    ``"no_replica"`` (none in rotation), ``"read"`` (a replica served a read),
    ``"failed"`` (the replica named failed a read, which is retried elsewhere),
    ``"connection"`` (`Session.connection()`, counted as a write).
    """

    target: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReplicaEjected(Event):
    """`replica` left the rotation: ``reason`` is ``"lag"`` or ``"unreachable"``."""

    replica: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReplicaReadmitted(Event):
    """`replica` is back in rotation after an ejection."""

    replica: str


@dataclass(frozen=True, slots=True)
class LagSampled(Event):
    """A lag measurement of `replica`: bytes of WAL not yet replayed and seconds behind."""

    replica: str
    lag_bytes: int | None
    lag_seconds: float | None


@dataclass(frozen=True, slots=True)
class TimelineChanged(Event):
    """The router saw a newer WAL history than before: a standby was promoted (`previous` to
    `current`), or the primary engine now reaches another cluster. Tokens taken on `previous`
    read from the primary from now on."""

    previous: Timeline
    current: Timeline
