"""The pure core of rate limiting: decision functions ``(state, now, cost) -> (decision, state)``.

Three algorithms, each a small immutable object:

- `GCRA` (the default): the generic cell rate algorithm, equivalent to a token bucket of
  `burst` tokens refilled at the rate, stored as one number (the theoretical arrival
  time). Over any interval of ``w`` seconds it allows at most ``rate * w + burst``.
- `SlidingWindow`: the sliding-window counter (the previous window's count weighted by how
  much of it still overlaps the sliding window, plus the current count). Two integers.
- `FixedWindow`: a counter per aligned window of `period` seconds. Cheapest; allows up to
  twice the limit across a window boundary.

The in-process limiter calls `decide` under a lock with its clock's time; the Redis
limiter runs the same arithmetic in Lua (`lua` below, one script per decision) with the
server's clock, so the two give the same decisions for the same times (a test checks it).
Floats cross into Lua as shortest round-trip strings and come back formatted with
``%.17g``, so both sides compute with exactly the same doubles.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

from scalepatterns.backpressure.rates import Rate
from scalepatterns.errors import ConfigurationError

__all__ = [
    "Algorithm",
    "Decision",
    "FixedWindow",
    "GCRA",
    "SlidingWindow",
]

# Rounding slack of the float arithmetic, in units: a count within a millionth of a unit of
# the limit is at the limit.
_EPS = 1e-6
# GCRA allows a call arriving within a thousandth of a unit's interval of its turn: a client
# spaced exactly at the rate accumulates rounding errors in the stored arrival time (about
# one ulp per call, 2.4e-7 s at Unix-epoch magnitudes), which must not get it refused.
_GCRA_SLACK = 1e-3


class Decision(NamedTuple):
    """What a limiter decided for one call; falsy when refused.

    Attributes:
        allowed: whether the call may go ahead.
        remaining: units still available right now after this decision.
        retry_after: seconds until the same call would be allowed (0.0 when allowed).
        reset_after: seconds until the limiter is back to its full allowance for the key.
    """

    allowed: bool
    remaining: int
    retry_after: float
    reset_after: float

    def __bool__(self) -> bool:
        return self.allowed


class Algorithm(Protocol):
    """A rate-limiting algorithm: a pure decision function and its Lua mirror."""

    name: str
    rate: Rate
    max_cost: int
    lua: str

    def decide(self, state: Any, now: float, cost: int) -> tuple[Decision, Any]:
        """Decide for `cost` units at time `now` given the key's `state` (None if new)."""
        ...

    def expired(self, state: Any, now: float) -> bool:
        """Whether `state` no longer affects any decision at `now` (it may be forgotten)."""
        ...

    def peek(self, state: Any, now: float) -> Decision:
        """What one unit would get at `now`, spending nothing: `remaining` is the units
        available now, `reset_after` the seconds until the key is back to its full
        allowance (0.0 when it is)."""
        ...

    redis_fields: tuple[str, ...]
    """The hash fields the Lua script stores a key's state in; () for a string value."""

    def state_from_redis(self, stored: Any) -> Any:
        """The state from what Redis holds: the ``GET`` reply, or the ``HMGET`` reply of
        `redis_fields`."""
        ...


def _check_burst(burst: int) -> int:
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ConfigurationError("burst", burst, "an integer >= 1 (units allowed at once)")
    return burst


# The scripts count time from this Unix time (see _LUA_NOW); reading a key's state outside
# a script (`peek`) converts the server's TIME the same way.
SERVER_EPOCH = 1_700_000_000

# Shared Lua prologue. The algorithm's parameters are written into each script as literals
# (one script per configuration: fewer arguments to send and parse on every call).
# ARGV[1], optional, is the cost (default 1); ARGV[2], for tests only, the time (default:
# the server's clock). Reading TIME before a write needs effect replication, the default
# since Redis 5.
_LUA_NOW = """
local cost = 1
if ARGV[1] then cost = tonumber(ARGV[1]) end
local now
if ARGV[2] then
  now = tonumber(ARGV[2])
else
  -- Seconds since 2023-11-14 rather than 1970: a double then resolves 15 ns instead of
  -- 240 ns, so even a microsecond interval per unit is counted without visible rounding.
  local t = redis.call('TIME')
  now = (tonumber(t[1]) - 1700000000) + tonumber(t[2]) / 1000000
end
-- Replies are one bulk string, 'allowed remaining retry_after reset_after' (cheaper to
-- parse than an array), with floats as %.17g so they come back to Python bit for bit.
local fmt = string.format
"""


def _fill(template: str, **values: float | int) -> str:
    """The script with each ``@name@`` replaced by the shortest exact literal of its value."""
    for name, value in values.items():
        template = template.replace(f"@{name}@", repr(value))
    return template


class GCRA:
    """Generic cell rate algorithm: a token bucket of `burst` units refilled at `rate`.

    State: the theoretical arrival time (a float), or None for a key never seen.

    ```python
    from scalepatterns.backpressure import GCRA, Rate

    gcra = GCRA(Rate(10, 1.0), burst=2)
    first, state = gcra.decide(None, now=0.0, cost=1)
    second, state = gcra.decide(state, now=0.0, cost=1)
    third, state = gcra.decide(state, now=0.0, cost=1)
    assert (first.allowed, second.allowed, third.allowed) == (True, True, False)
    assert round(third.retry_after, 6) == 0.1
    ```
    """

    name = "gcra"
    __slots__ = ("burst", "interval", "lua", "max_cost", "rate", "slack", "tolerance")

    def __init__(self, rate: Rate, burst: int | None = None) -> None:
        self.rate = rate
        self.burst = _check_burst(rate.limit if burst is None else burst)
        self.max_cost = self.burst
        self.interval = rate.period / rate.limit  # seconds per unit
        self.tolerance = self.burst * self.interval  # the bucket's depth, in seconds
        self.slack = self.interval * _GCRA_SLACK
        self.lua = _fill(
            _GCRA_LUA, interval=self.interval, tolerance=self.tolerance, slack=self.slack
        )

    def decide(self, state: float | None, now: float, cost: int) -> tuple[Decision, float | None]:
        interval = self.interval
        tolerance = self.tolerance
        tat = state if state is not None and state > now else now
        new_tat = tat + cost * interval
        diff = now - (new_tat - tolerance)
        if diff < -self.slack:
            remaining = math.floor((tolerance - (tat - now)) / interval + _EPS)
            return Decision(False, remaining, -diff, tat - now), state
        return Decision(True, math.floor(diff / interval + _EPS), 0.0, new_tat - now), new_tat

    def expired(self, state: float | None, now: float) -> bool:
        return state is None or state <= now

    def peek(self, state: float | None, now: float) -> Decision:
        tat = state if state is not None and state > now else now
        remaining = math.floor((self.tolerance - (tat - now)) / self.interval + _EPS)
        decision, _ = self.decide(state, now, 1)
        return Decision(decision.allowed, remaining, decision.retry_after, tat - now)

    redis_fields: tuple[str, ...] = ()

    def state_from_redis(self, stored: bytes | str | None) -> float | None:
        return None if stored is None else float(stored)

    def __repr__(self) -> str:
        return f"GCRA({self.rate}, burst={self.burst})"


_GCRA_LUA = (
    _LUA_NOW
    + """
local interval = @interval@
local tolerance = @tolerance@
local slack = @slack@
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  local s = tonumber(stored)
  if s > now then tat = s end
end
local new_tat = tat + cost * interval
local diff = now - (new_tat - tolerance)
if diff < -slack then
  local remaining = math.floor((tolerance - (tat - now)) / interval + 1e-6)
  return fmt('0 %d %.17g %.17g', remaining, -diff, tat - now)
end
local ttl = math.max(1, math.ceil((new_tat - now) * 1000))
redis.call('SET', KEYS[1], fmt('%.17g', new_tat), 'PX', ttl)
return fmt('1 %d 0 %.17g', math.floor(diff / interval + 1e-6), new_tat - now)
"""
)


class _Window:
    """What the window algorithms share: the limit is also the burst; period and limit
    are the script's parameters."""

    __slots__ = ("lua", "max_cost", "rate")
    _lua: str

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self.max_cost = rate.limit
        self.lua = _fill(self._lua, period=rate.period, limit=rate.limit)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.rate})"


_LUA_WINDOW = (
    _LUA_NOW
    + """
local period = @period@
local limit = @limit@
local index = math.floor(now / period)
"""
)


def _window_counts(state: tuple[int, int, int] | None, index: int) -> tuple[int, int]:
    """(previous window's count, current window's count) of a sliding-window state at
    window `index`."""
    if state is None:
        return 0, 0
    if state[0] == index:
        return state[1], state[2]
    return (state[2], 0) if state[0] == index - 1 else (0, 0)


class SlidingWindow(_Window):
    """Sliding-window counter: the previous window's count, weighted, plus the current one.

    State: ``(window index, previous count, current count)``, or None for a new key.
    Smoother than `FixedWindow` at a window boundary; `limit` is also the burst.
    """

    name = "sliding-window"
    __slots__ = ()

    def decide(
        self, state: tuple[int, int, int] | None, now: float, cost: int
    ) -> tuple[Decision, tuple[int, int, int] | None]:
        period = self.rate.period
        limit = self.rate.limit
        index = math.floor(now / period)
        prev, curr = _window_counts(state, index)
        start = index * period
        weight = 1 - (now - start) / period
        estimate = prev * weight + curr
        if estimate + cost <= limit + _EPS:
            curr += cost
            remaining = max(0, math.floor(limit - (prev * weight + curr) + _EPS))
            return (
                Decision(True, remaining, 0.0, start + 2 * period - now),
                (index, prev, curr),
            )
        room = limit - cost - curr
        if room >= 0 and prev > 0:
            at = start + (1 - room / prev) * period
        elif curr <= limit - cost:
            at = start + period
        else:
            at = start + period + (1 - (limit - cost) / curr) * period
        remaining = max(0, math.floor(limit - estimate + _EPS))
        return Decision(False, remaining, max(0.0, at - now), start + 2 * period - now), state

    def expired(self, state: tuple[int, int, int] | None, now: float) -> bool:
        return state is None or (state[0] + 2) * self.rate.period <= now

    def peek(self, state: tuple[int, int, int] | None, now: float) -> Decision:
        period = self.rate.period
        index = math.floor(now / period)
        prev, curr = _window_counts(state, index)
        start = index * period
        estimate = prev * (1 - (now - start) / period) + curr
        remaining = max(0, math.floor(self.rate.limit - estimate + _EPS))
        # the current window's count weighs until the end of the next one, the previous
        # window's until the end of this one
        reset = start + (2 if curr else 1) * period - now if curr or prev else 0.0
        decision, _ = self.decide(state, now, 1)
        return Decision(decision.allowed, remaining, decision.retry_after, reset)

    redis_fields: tuple[str, ...] = ("w", "p", "c")

    def state_from_redis(self, stored: list[Any]) -> tuple[int, int, int] | None:
        if stored[0] is None:
            return None
        w, p, c = (int(float(value)) for value in stored)
        return (w, p, c)

    _lua = (
        _LUA_WINDOW
        + """
local prev, curr = 0, 0
local stored = redis.call('HMGET', KEYS[1], 'w', 'p', 'c')
if stored[1] then
  local w = tonumber(stored[1])
  if w == index then
    prev, curr = tonumber(stored[2]), tonumber(stored[3])
  elseif w == index - 1 then
    prev = tonumber(stored[3])
  end
end
local start = index * period
local weight = 1 - (now - start) / period
local estimate = prev * weight + curr
if estimate + cost <= limit + 1e-6 then
  curr = curr + cost
  local remaining = math.max(0, math.floor(limit - (prev * weight + curr) + 1e-6))
  local reset = start + 2 * period - now
  redis.call('HSET', KEYS[1], 'w', index, 'p', prev, 'c', curr)
  redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(reset * 1000)))
  return fmt('1 %d 0 %.17g', remaining, reset)
end
local room = limit - cost - curr
local at
if room >= 0 and prev > 0 then
  at = start + (1 - room / prev) * period
elseif curr <= limit - cost then
  at = start + period
else
  at = start + period + (1 - (limit - cost) / curr) * period
end
local remaining = math.max(0, math.floor(limit - estimate + 1e-6))
return fmt('0 %d %.17g %.17g', remaining, math.max(0, at - now), start + 2 * period - now)
"""
    )


class FixedWindow(_Window):
    """A counter per aligned window of `period` seconds; `limit` units per window.

    State: ``(window index, count)``, or None for a new key.
    """

    name = "fixed-window"
    __slots__ = ()

    def decide(
        self, state: tuple[int, int] | None, now: float, cost: int
    ) -> tuple[Decision, tuple[int, int] | None]:
        period = self.rate.period
        index = math.floor(now / period)
        count = state[1] if state is not None and state[0] == index else 0
        reset = (index + 1) * period - now
        if count + cost <= self.rate.limit:
            count += cost
            return Decision(True, self.rate.limit - count, 0.0, reset), (index, count)
        return Decision(False, self.rate.limit - count, reset, reset), state

    def expired(self, state: tuple[int, int] | None, now: float) -> bool:
        return state is None or (state[0] + 1) * self.rate.period <= now

    def peek(self, state: tuple[int, int] | None, now: float) -> Decision:
        period = self.rate.period
        index = math.floor(now / period)
        count = state[1] if state is not None and state[0] == index else 0
        decision, _ = self.decide(state, now, 1)
        reset = (index + 1) * period - now if count else 0.0
        return Decision(decision.allowed, self.rate.limit - count, decision.retry_after, reset)

    redis_fields: tuple[str, ...] = ("w", "c")

    def state_from_redis(self, stored: list[Any]) -> tuple[int, int] | None:
        if stored[0] is None or stored[1] is None:
            return None
        return (int(float(stored[0])), int(float(stored[1])))

    _lua = (
        _LUA_WINDOW
        + """
local count = 0
local stored = redis.call('HMGET', KEYS[1], 'w', 'c')
if stored[1] and tonumber(stored[1]) == index then count = tonumber(stored[2]) end
local reset = (index + 1) * period - now
if count + cost <= limit then
  count = count + cost
  redis.call('HSET', KEYS[1], 'w', index, 'c', count)
  redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(reset * 1000)))
  return fmt('1 %d 0 %.17g', limit - count, reset)
end
return fmt('0 %d %.17g %.17g', limit - count, reset, reset)
"""
    )
