"""Replica health: which replicas are in rotation, decided without any I/O.

`ReplicaHealth` is the pure core of the router's failure behaviour. It is fed lag samples
(from `ReadWriteRouter.check()` and its monitor), connection failures and successes (from sessions
and the monitor), and reads a clock; it answers which replicas may serve a read now and
reports each ejection and re-admission as a `Transition`:

- a replica whose last sample shows more than `max_lag_seconds` or `max_lag_bytes` of lag
  is out until a sample shows it back under the bound;
- a replica that failed `failure_threshold` times in a row is out for `cooldown` seconds;
  after that it is tried again, and the first success re-admits it (the first failure
  ejects it for another cool-down). The count and the cool-down are the shared core's
  (`scalepatterns._cooldown`), without its one-trial gate: a read session does not
  report when it is done with a replica, so every read may try it once the cool-down is
  over.

```python
from scalepatterns.clock import FakeClock
from scalepatterns.routing.health import LagSample, ReplicaHealth

clock = FakeClock()
health = ReplicaHealth(["r1", "r2"], max_lag_seconds=5.0, cooldown=10.0, clock=clock)
health.record_sample("r1", LagSample(lag_seconds=30.0))
health.record_failure("r2")
assert health.in_rotation() == []
clock.advance(10.0)
assert health.in_rotation() == ["r2"]      # cool-down over: tried again
health.record_success("r2")
health.record_sample("r1", LagSample(lag_seconds=0.5))
assert health.in_rotation() == ["r1", "r2"]
```
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from scalepatterns._cooldown import CooldownPolicy, CooldownState
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError
from scalepatterns.routing.timeline import Timeline

__all__ = ["LagSample", "ReplicaHealth", "ReplicaStatus", "ReplicaView", "Transition"]


@dataclass(frozen=True, slots=True)
class LagSample:
    """One measurement of a replica, as read from the server.

    Attributes:
        lag_bytes: WAL bytes received or produced on the primary but not yet replayed.
        lag_seconds: seconds the replayed state is behind (0 when nothing is pending).
        replay_lsn: the replica's ``pg_last_wal_replay_lsn()`` as an integer (for a server
            out of recovery, its insert position).
        timeline: the WAL history `replay_lsn` belongs to (None if unknown).
        in_recovery: whether the server is a standby (``pg_is_in_recovery()``); False for
            a "replica" that is a primary (a promoted standby, a wrong URL); None if not
            asked (no WAL functions: SQLite, or refused).
    """

    lag_bytes: int | None = None
    lag_seconds: float | None = None
    replay_lsn: int | None = None
    timeline: Timeline | None = None
    in_recovery: bool | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """A replica left (``kind="ejected"``) or re-entered (``"readmitted"``) the rotation."""

    replica: str
    kind: str
    reason: str


class ReplicaView(Protocol):
    """What a balancing strategy may look at when it chooses among replicas."""

    @property
    def name(self) -> str: ...
    @property
    def weight(self) -> float: ...
    @property
    def lag_bytes(self) -> int | None: ...
    @property
    def lag_seconds(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """A snapshot of one replica's health (`ReadWriteRouter.status()`).

    `in_recovery` is the last measurement's (see `LagSample`): False warns that the
    "replica" is not a standby at all.
    """

    name: str
    weight: float
    in_rotation: bool
    ejected_for: str | None
    lag_bytes: int | None
    lag_seconds: float | None
    replay_lsn: int | None
    consecutive_failures: int
    timeline: Timeline | None = None
    in_recovery: bool | None = None


class _Replica:
    __slots__ = (
        "in_recovery",
        "lag_bytes",
        "lag_ejected",
        "lag_seconds",
        "name",
        "outage",
        "replay_lsn",
        "timeline",
        "weight",
    )

    def __init__(self, name: str, weight: float, policy: CooldownPolicy) -> None:
        self.name = name
        self.weight = weight
        self.lag_bytes: int | None = None
        self.lag_seconds: float | None = None
        self.replay_lsn: int | None = None
        self.timeline: Timeline | None = None
        self.in_recovery: bool | None = None
        self.lag_ejected = False
        # failures in a row and the cool-down after them ("unreachable")
        self.outage = CooldownState(policy)


class ReplicaHealth:
    """The rotation state of a set of named replicas (thread-safe, no I/O).

    Args:
        names: the replicas' names, in a stable order.
        weights: relative weights for weighted balancing (default 1.0 each).
        max_lag_seconds: a replica further behind is taken out (None: no bound).
        max_lag_bytes: a replica with more unreplayed WAL is taken out (None: no bound).
        failure_threshold: consecutive failures that eject a replica (>= 1).
        cooldown: seconds an unreachable replica stays out before it is tried again (> 0).
        clock: time source.
    """

    def __init__(
        self,
        names: Sequence[str],
        *,
        weights: Mapping[str, float] | None = None,
        max_lag_seconds: float | None = None,
        max_lag_bytes: int | None = None,
        failure_threshold: int = 1,
        cooldown: float = 5.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if len(set(names)) != len(names):
            raise ConfigurationError("replicas", list(names), "distinct replica names")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise ConfigurationError("weights", unknown, f"names among {list(names)}")
        for name, weight in weights.items():
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight > 0):
                raise ConfigurationError(f"weights[{name!r}]", weight, "a number > 0")
        if max_lag_seconds is not None and not max_lag_seconds >= 0:
            raise ConfigurationError("max_lag", max_lag_seconds, "seconds >= 0, or None")
        if max_lag_bytes is not None and not max_lag_bytes >= 0:
            raise ConfigurationError("max_lag_bytes", max_lag_bytes, "bytes >= 0, or None")
        self._policy = policy = CooldownPolicy(failure_threshold, cooldown, outcomes="any")
        self.max_lag_seconds = max_lag_seconds
        self.max_lag_bytes = max_lag_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._replicas = {n: _Replica(n, float(weights.get(n, 1.0)), policy) for n in names}
        self._order = tuple(self._replicas.values())
        # Bumped on every ejection and re-admission, so sessions can cheaply tell whether
        # the replica they pinned may have left the rotation.
        self.generation = 0
        # Replicas with failures on record or out of rotation; while empty (the healthy
        # steady state) `candidates()` and `troubled()` answer without reading the clock.
        self._troubled: set[str] = set()

    @property
    def failure_threshold(self) -> int | None:
        """Consecutive failures that eject a replica."""
        return self._policy.failure_threshold

    @property
    def cooldown(self) -> float:
        """Seconds an unreachable replica stays out before it is tried again."""
        return self._policy.cooldown

    @property
    def names(self) -> list[str]:
        return [r.name for r in self._order]

    def _available(self, replica: _Replica, now: float) -> bool:
        outage = replica.outage
        return not replica.lag_ejected and not (outage.out and outage.cooling(now))

    def in_rotation(self) -> list[str]:
        """Names of the replicas that may serve reads now, in configured order."""
        now = self._clock.monotonic()
        return [r.name for r in self._order if self._available(r, now)]

    def candidates(
        self, min_lsn: int | None = None, timeline: Timeline | None = None
    ) -> list[ReplicaView]:
        """Replicas in rotation (known to have replayed `min_lsn` on `timeline`, when given)."""
        if not self._troubled and min_lsn is None:
            return list(self._order)
        now = self._clock.monotonic()
        return [
            r
            for r in self._order
            if self._available(r, now)
            and (
                min_lsn is None
                or (r.replay_lsn is not None and r.replay_lsn >= min_lsn and r.timeline == timeline)
            )
        ]

    @property
    def steady(self) -> bool:
        """No replica has failures, an ejection or lag on record: every one is a candidate."""
        return not self._troubled

    @property
    def in_order(self) -> Sequence[ReplicaView]:
        """Every replica, in the order given (not to be changed by the caller)."""
        return self._order

    def is_available(self, name: str) -> bool:
        return self._available(self._replicas[name], self._clock.monotonic())

    def troubled(self, name: str) -> bool:
        """Whether `name` has failures on record (so a success is news)."""
        return name in self._troubled

    def _mark(self, replica: _Replica) -> None:
        """Keep `_troubled` in step with the replica's state (call with the lock held)."""
        outage = replica.outage
        if outage.failures or outage.out or replica.lag_ejected:
            self._troubled.add(replica.name)
        else:
            self._troubled.discard(replica.name)

    def replay_lsn(self, name: str) -> int | None:
        return self._replicas[name].replay_lsn

    def _place(self, replica: _Replica, lsn: int, timeline: Timeline | None) -> None:
        """Record a position (call with the lock held): positions only move on within one
        timeline; one on another timeline replaces it (a promotion, or a rebuilt server)."""
        if replica.timeline != timeline or replica.replay_lsn is None or lsn > replica.replay_lsn:
            replica.replay_lsn = lsn
            replica.timeline = timeline

    def _measures(self, sample: LagSample) -> bool:
        """Whether `sample` carries a figure one of the lag bounds is checked against."""
        return (self.max_lag_seconds is not None and sample.lag_seconds is not None) or (
            self.max_lag_bytes is not None and sample.lag_bytes is not None
        )

    def _lagging(self, sample: LagSample) -> bool:
        if (
            self.max_lag_seconds is not None
            and sample.lag_seconds is not None
            and sample.lag_seconds > self.max_lag_seconds
        ):
            return True
        return (
            self.max_lag_bytes is not None
            and sample.lag_bytes is not None
            and sample.lag_bytes > self.max_lag_bytes
        )

    def note_position(self, name: str, lsn: int, timeline: Timeline | None) -> None:
        """Record a replay position seen outside a full sample."""
        with self._lock:
            self._place(self._replicas[name], lsn, timeline)

    def record_sample(self, name: str, sample: LagSample) -> list[Transition]:
        """A successful measurement: updates lag, and counts as a successful connection."""
        replica = self._replicas[name]
        transitions = self.record_success(name)
        with self._lock:
            replica.lag_bytes = sample.lag_bytes
            replica.lag_seconds = sample.lag_seconds
            if sample.in_recovery is not None:
                replica.in_recovery = sample.in_recovery
            if sample.replay_lsn is not None:
                replica.replay_lsn = sample.replay_lsn
                replica.timeline = sample.timeline
            # A sample with no lag figure (the primary's position could not be read) says
            # nothing about lag: a replica ejected for it stays out until one does.
            lagging = self._lagging(sample) if self._measures(sample) else replica.lag_ejected
            if lagging != replica.lag_ejected:
                replica.lag_ejected = lagging
                self.generation += 1
                kind = "ejected" if lagging else "readmitted"
                transitions.append(Transition(name, kind, "lag"))
            self._mark(replica)
        return transitions

    def record_failure(self, name: str) -> list[Transition]:
        """A connection or query on the replica failed."""
        outage = self._replicas[name].outage
        with self._lock:
            due = outage.failed()
            self._troubled.add(name)
            if due is None:
                return []
            outage.trip(self._clock.monotonic())
            self.generation += 1
            if due == "again":  # already out: the cool-down starts over
                return []
            return [Transition(name, "ejected", "unreachable")]

    def record_success(self, name: str) -> list[Transition]:
        """The replica answered: clears failures and re-admits it after an outage."""
        replica = self._replicas[name]
        outage = replica.outage
        if not (outage.failures or outage.out):
            return []
        with self._lock:
            readmitted = outage.succeeded()
            self._mark(replica)
            if not readmitted:
                return []
            self.generation += 1
            return [Transition(name, "readmitted", "unreachable")]

    def status(self) -> list[ReplicaStatus]:
        """A snapshot of every replica."""
        now = self._clock.monotonic()
        out = []
        for r in self._order:
            available = self._available(r, now)
            ejected_for = None
            if r.outage.out:
                ejected_for = "unreachable"
            elif r.lag_ejected:
                ejected_for = "lag"
            out.append(
                ReplicaStatus(
                    name=r.name,
                    weight=r.weight,
                    in_rotation=available,
                    ejected_for=ejected_for,
                    lag_bytes=r.lag_bytes,
                    lag_seconds=r.lag_seconds,
                    replay_lsn=r.replay_lsn,
                    consecutive_failures=r.outage.failures,
                    timeline=r.timeline,
                    in_recovery=r.in_recovery,
                )
            )
        return out
