"""Consistency tokens: what a client carries between requests to read its own writes.

A token is a short, versioned string. After a session commits a write, the router hands
one out (`ReadWriteRouter.token(session)`); the application puts it in a cookie, a header
or a queue message and gives it to the next session (`consistency_token=`). That session
then only reads from a replica that has caught up with the write, or from the primary.

Two kinds exist:

- ``v1:pg:<system id>:<timeline>:<hi>/<lo>``: a PostgreSQL WAL position
  (``pg_current_wal_insert_lsn()`` read on the primary after the commit) and the WAL history
  it belongs to (the cluster's system identifier and the primary's timeline, all in hex). A
  replica on that same history whose ``pg_last_wal_replay_lsn()`` has reached the position
  has the write. Positions of different histories cannot be compared: after a standby is
  promoted (a new timeline), or against another cluster, the token's holder reads from the
  primary. The older layout ``v1:pg:<hi>/<lo>`` names no history and is still accepted; its
  holder reads from the primary.
- ``v1:t:<unix seconds>``: when the write committed, for engines without a WAL position
  (SQLite, managed PostgreSQL variants hiding ``pg_last_wal_*``): reads stick to the primary
  for the router's ``sticky_for`` seconds after it.

Parsing is strict; anything else raises `InvalidToken`. A token only ever narrows where
*reads* may go: it never routes a write, and a forged one can at most send a client's reads
to the primary (a time token from the future counts as "now").

```python
from scalepatterns.routing.timeline import Timeline
from scalepatterns.routing.token import ConsistencyToken

token = ConsistencyToken.parse("v1:pg:6B9F6A3B1C2D3E4F:2:0/16B3748")
assert token.lsn == 0x16B3748 and token.timeline == Timeline(0x6B9F6A3B1C2D3E4F, 2)
assert str(token) == "v1:pg:6B9F6A3B1C2D3E4F:2:0/16B3748"
```
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from scalepatterns.routing.errors import InvalidToken
from scalepatterns.routing.timeline import Timeline

__all__ = ["ConsistencyToken", "format_lsn", "parse_lsn"]

MAX_TOKEN_LENGTH = 64
_LSN = re.compile(r"([0-9A-F]{1,8})/([0-9A-F]{1,8})")
_TOKEN = re.compile(r"v1:(pg|t):([0-9A-F/.:]{1,50})")
_HISTORY = re.compile(r"([0-9A-F]{1,16}):([0-9A-F]{1,8}):(.*)")
_WALL = re.compile(r"(\d{1,11})(?:\.(\d{1,9}))?")


def parse_lsn(text: str) -> int:
    """A PostgreSQL ``pg_lsn`` text (``"16/B374D848"``) as a 64-bit integer."""
    match = _LSN.fullmatch(text.upper()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a PostgreSQL LSN: {text!r}")
    return (int(match[1], 16) << 32) | int(match[2], 16)


def format_lsn(value: int) -> str:
    """The ``pg_lsn`` text of a 64-bit WAL position (the inverse of `parse_lsn`)."""
    if not 0 <= value < 1 << 64:
        raise ValueError(f"a WAL position is a 64-bit unsigned integer, not {value!r}")
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass(frozen=True, slots=True)
class ConsistencyToken:
    """A parsed token: a WAL position (`lsn`, on `timeline`) or a commit wall time (`wall_time`).

    `timeline` is None only for a WAL token in the older layout without one.
    """

    lsn: int | None = None
    wall_time: float | None = None
    timeline: Timeline | None = None

    def __post_init__(self) -> None:
        if (self.lsn is None) == (self.wall_time is None):
            raise ValueError("a ConsistencyToken holds exactly one of lsn and wall_time")
        if self.lsn is not None:
            format_lsn(self.lsn)  # validates the range
        elif self.timeline is not None:
            raise ValueError("only a WAL position has a timeline")
        if self.wall_time is not None and not (
            math.isfinite(self.wall_time) and self.wall_time >= 0
        ):
            raise ValueError("wall_time must be a finite, non-negative number of seconds")

    @classmethod
    def at_lsn(cls, lsn: int, timeline: Timeline | None) -> ConsistencyToken:
        return cls(lsn=lsn, timeline=timeline)

    @classmethod
    def at_time(cls, wall_time: float) -> ConsistencyToken:
        return cls(wall_time=round(wall_time, 6))

    @classmethod
    def parse(cls, text: object) -> ConsistencyToken:
        """Parse a token string strictly; raise `InvalidToken` for anything else."""
        if not isinstance(text, str):
            raise InvalidToken(text, f"a token is a str, not {type(text).__name__}")
        if len(text) > MAX_TOKEN_LENGTH:
            raise InvalidToken(text, f"longer than {MAX_TOKEN_LENGTH} characters")
        match = _TOKEN.fullmatch(text)
        if match is None:
            raise InvalidToken(text, "unknown version or layout")
        kind, body = match[1], match[2]
        if kind == "pg":
            timeline = None
            history = _HISTORY.fullmatch(body)
            if history is not None:
                system_id, timeline_id, body = int(history[1], 16), int(history[2], 16), history[3]
                if timeline_id == 0:
                    raise InvalidToken(text, "timeline 0 does not exist")
                timeline = Timeline(system_id, timeline_id)
            if _LSN.fullmatch(body) is None:
                raise InvalidToken(
                    text, "the WAL position is not <system id>:<timeline>:<hex>/<hex> in upper case"
                )
            return cls(lsn=parse_lsn(body), timeline=timeline)
        if _WALL.fullmatch(body) is None:
            raise InvalidToken(text, "the time is not <seconds>[.<fraction>]")
        return cls(wall_time=float(body))

    def __str__(self) -> str:
        if self.lsn is not None:
            if self.timeline is None:
                return f"v1:pg:{format_lsn(self.lsn)}"
            return f"v1:pg:{self.timeline}:{format_lsn(self.lsn)}"
        return f"v1:t:{self.wall_time:.6f}"

    def newer(self, other: ConsistencyToken | None) -> ConsistencyToken:
        """The later of two tokens of the same kind (self when kinds differ or other is None).

        Of two WAL tokens, the one on the later timeline of the same cluster wins (a token
        with no timeline loses to one with); on one timeline, the later position.
        """
        if other is None:
            return self
        if self.lsn is not None and other.lsn is not None:
            mine, theirs = self.timeline, other.timeline
            if mine != theirs:
                if theirs is None or mine is None:
                    return self if theirs is None else other
                later = mine.system_id != theirs.system_id or mine.timeline_id > theirs.timeline_id
                return self if later else other
            return self if self.lsn >= other.lsn else other
        if self.wall_time is not None and other.wall_time is not None:
            return self if self.wall_time >= other.wall_time else other
        return self
