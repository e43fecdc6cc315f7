"""The pure core of the cache: TTL jitter, freshness decisions, early refresh (XFetch).

Nothing here does I/O or reads a clock; drivers pass `now` and a random number in.
"""

from __future__ import annotations

import enum
import math
import struct

from scalepatterns.errors import SerializationError

__all__ = [
    "Freshness",
    "classify",
    "decode_entry",
    "encode_entry",
    "jittered",
    "should_refresh_early",
]


class Freshness(enum.Enum):
    """What a stored entry may be used for at a given moment."""

    FRESH = "fresh"
    """Serve it."""
    EARLY = "early"
    """Serve it, and refresh it now: it is close to expiry (XFetch)."""
    STALE = "stale"
    """Past expiry but within `stale_ttl`: serve it while one caller refreshes."""
    EXPIRED = "expired"
    """Load (stale-if-error may still serve it if the load raises)."""


def jittered(ttl: float, jitter: float, rand: float) -> float:
    """`ttl` shortened by up to `jitter` (a fraction), so entries written together expire apart.

    Never longer than `ttl`: a configured TTL is a promise about staleness.
    """
    return ttl * (1.0 - jitter * rand)


def should_refresh_early(
    now: float, expires: float, delta: float, beta: float, rand: float
) -> bool:
    """XFetch (Vattani et al., 2015): refresh with probability rising towards expiry.

    `delta` is how long the last load took; `beta` > 1 favours earlier refreshes; `rand`
    is uniform in (0, 1]. True when ``now - delta * beta * ln(rand) >= expires``.
    """
    if rand <= 0.0:
        return True
    return now - delta * beta * math.log(rand) >= expires


def classify(  # noqa: PLR0917 - a pure function of six numbers
    now: float,
    fresh_until: float,
    stale_until: float,
    delta: float,
    beta: float,
    rand: float,
) -> Freshness:
    """The use an entry may be put to at `now`."""
    if now < fresh_until:
        if beta and should_refresh_early(now, fresh_until, delta, beta, rand):
            return Freshness.EARLY
        return Freshness.FRESH
    if now < stale_until:
        return Freshness.STALE
    return Freshness.EXPIRED


# Envelope for shared backends: MAGIC, fresh_until (wall clock), load seconds, payload.
# Bytes without the magic are a plain serialized value, fresh for as long as the
# backend keeps them: what a service in another language writes.
MAGIC = b"\xffSP1"
HEADER = struct.Struct(">dd")
_OFFSET = len(MAGIC) + HEADER.size


def encode_entry(payload: bytes, fresh_until: float, delta: float) -> bytes:
    """Wrap a serialized value with its expiry time and load duration."""
    return MAGIC + HEADER.pack(fresh_until, delta) + payload


def decode_entry(data: bytes) -> tuple[bytes, float, float]:
    """(payload, fresh_until, delta); a plain value is fresh forever (inf) with delta 0."""
    if data[:4] != MAGIC:
        return data, math.inf, 0.0
    if len(data) < _OFFSET:
        raise SerializationError("stored cache entry is truncated")
    fresh_until, delta = HEADER.unpack_from(data, len(MAGIC))
    return data[_OFFSET:], fresh_until, delta
