"""Rates: ``"100/second"``, ``"5000/hour"``, ``"10 per minute"``, ``"20/5 seconds"``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from scalepatterns.errors import ConfigurationError

__all__ = ["Rate", "parse_rate"]

_UNITS: dict[str, float] = {
    "ms": 0.001,
    "millisecond": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_RATE = re.compile(
    r"^\s*(?P<limit>\d+)\s*(?:/|per)\s*(?P<count>\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]+)\s*$",
    re.IGNORECASE,
)
_ACCEPTED = (
    "a rate such as '100/second', '5000/hour', '10 per minute' or '20/5s' "
    "(units: ms, s, second, m, minute, h, hour, d, day), or a Rate"
)


@dataclass(frozen=True, slots=True)
class Rate:
    """`limit` units per `period` seconds (both > 0).

    ```python
    from scalepatterns.backpressure import Rate, parse_rate

    assert parse_rate("10 per minute") == Rate(10, 60.0)
    assert Rate(100, 1.0).per_second == 100.0
    ```
    """

    limit: int
    period: float

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ConfigurationError("rate", self.limit, "a limit that is an integer >= 1")
        if (
            isinstance(self.period, bool)
            or not isinstance(self.period, (int, float))
            or not math.isfinite(self.period)
            or self.period <= 0
        ):
            raise ConfigurationError("period", self.period, "a number of seconds > 0")
        object.__setattr__(self, "period", float(self.period))

    @property
    def per_second(self) -> float:
        """The rate in units per second."""
        return self.limit / self.period

    def __str__(self) -> str:
        return f"{self.limit}/{self.period:g}s"


def parse_rate(rate: str | Rate | int, period: float | None = None) -> Rate:
    """Turn ``"100/second"``, a `Rate`, or a number with `period` seconds into a `Rate`.

    Raises:
        ConfigurationError: naming ``rate`` (or ``period``) for anything unparsable, zero
            or negative.
    """
    if isinstance(rate, Rate):
        if period is not None:
            raise ConfigurationError("period", period, "None when rate is already a Rate")
        return rate
    if isinstance(rate, str):
        if period is not None:
            raise ConfigurationError("period", period, "None when rate is a string")
        match = _RATE.match(rate)
        unit = match["unit"].lower() if match else ""
        if unit not in _UNITS and unit.endswith("s"):
            unit = unit[:-1]  # plurals: seconds, minutes, hours
        if match is None or unit not in _UNITS:
            raise ConfigurationError("rate", rate, _ACCEPTED)
        count = float(match["count"]) if match["count"] else 1.0
        seconds = count * _UNITS[unit]
        if int(match["limit"]) < 1 or seconds <= 0:
            raise ConfigurationError("rate", rate, _ACCEPTED + ", with a limit >= 1 and period > 0")
        return Rate(int(match["limit"]), seconds)
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise ConfigurationError("rate", rate, _ACCEPTED + " or an integer with period=")
    if period is None:
        raise ConfigurationError("period", period, "seconds, when rate is a number")
    return Rate(rate, period)
