"""WAL histories (timelines) and which one is current, decided without any I/O.

A PostgreSQL WAL position means something only on one history: a standby promoted after
the primary died starts a new timeline that shares WAL with the old one up to the
promotion and no further. Writes the old primary made after that point (not yet
streamed: asynchronous replication) are lost, and a server left on the old timeline (the
old primary restarted, a standby that could not follow) holds positions that look recent
but belong to a dead history. `TimelineWatch` keeps the newest history the router has seen
and answers the two questions that follow:

- may this server take writes? Not if it is on an older timeline of the cluster than one
  already seen (a former primary that came back without being rebuilt);
- may this replica serve a token holder? Only if the token, the replica and the newest
  history all name the same timeline.

```python
from scalepatterns.routing.timeline import Timeline, TimelineWatch

watch = TimelineWatch()
assert watch.advance(Timeline(7, 1), primary=True) is None  # first sight
assert watch.advance(Timeline(7, 2), primary=True) == Timeline(7, 1)  # a promotion
assert watch.behind(Timeline(7, 1))  # the old primary, back: no writes for it
assert not watch.covers(Timeline(7, 1), Timeline(7, 1))  # a token from before: the primary
assert watch.covers(Timeline(7, 2), Timeline(7, 2))
```
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["Timeline", "TimelineWatch"]


@dataclass(frozen=True, slots=True)
class Timeline:
    """One WAL history of a PostgreSQL cluster: its system identifier and a timeline ID.

    A standby shares its primary's history; promoting it starts a new timeline that shares
    WAL with the old one only up to the promotion. WAL positions compare only within one
    `Timeline`.

    Attributes:
        system_id: ``pg_control_system().system_identifier``, the same on every server made
            from one ``initdb`` (a base backup keeps it).
        timeline_id: the timeline: 1 after ``initdb``, one more at each promotion.
    """

    system_id: int
    timeline_id: int

    def __post_init__(self) -> None:
        if not (0 <= self.system_id < 1 << 64 and 0 < self.timeline_id < 1 << 32):
            raise ValueError(f"not a PostgreSQL timeline: {self.system_id}, {self.timeline_id}")

    def __str__(self) -> str:
        return f"{self.system_id:X}:{self.timeline_id:X}"


class TimelineWatch:
    """The newest WAL history seen on the primary and the replicas (thread-safe, no I/O)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Timeline | None = None

    @property
    def current(self) -> Timeline | None:
        """The newest history seen, or None before the first measurement."""
        return self._current

    def behind(self, timeline: Timeline) -> bool:
        """Whether a server on `timeline` is on an older timeline of the cluster than one seen."""
        current = self._current
        return (
            current is not None
            and timeline.system_id == current.system_id
            and timeline.timeline_id < current.timeline_id
        )

    def advance(self, timeline: Timeline, *, primary: bool) -> Timeline | None:
        """Record a history seen on a server; return the previous newest when this replaces it.

        A later timeline of the same cluster replaces the newest, wherever it was seen (a
        standby on it proves the promotion happened). A primary of another cluster (the
        engine now points elsewhere) replaces it too; a replica of another cluster does not,
        since it is not a replica of this primary.
        """
        with self._lock:
            current = self._current
            if current == timeline:
                return None
            if current is None:
                self._current = timeline
                return None
            if timeline.system_id == current.system_id:
                if timeline.timeline_id < current.timeline_id:
                    return None
            elif not primary:
                return None
            self._current = timeline
            return current

    def covers(self, token: Timeline | None, replica: Timeline | None) -> bool:
        """Whether a replica on `replica` may serve a token taken on `token` (positions permitting).

        Only when both are the newest history: a token from before a promotion cannot be
        checked against any replica (its write may be lost, or held only by servers of the
        dead history), so its holder reads from the primary; a replica not known to be on
        the newest history may hold a position that belongs to a dead one.
        """
        current = self._current
        return current is not None and token == current and replica == current
