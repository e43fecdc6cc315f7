"""Turning keys into bytes and stable hashes (never the built-in `hash()`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

try:  # CPython's built-in MD5 costs half as much per call as OpenSSL's on short keys
    from _md5 import md5  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - a CPython built without its own hashes
    from hashlib import md5

from scalepatterns.errors import ConfigurationError
from scalepatterns.sharding.errors import InvalidShardKey

__all__ = ["Key", "hash64", "key_bytes", "md5", "nodes_repr", "normalize_nodes"]

Key = str | bytes | int | uuid.UUID
"""What a placement accepts as a key: text, bytes, an integer or a UUID."""

_MASK64 = (1 << 64) - 1


def key_bytes(key: object) -> bytes:
    """The canonical bytes of `key`: UTF-8 for text, decimal digits for ints, raw bytes.

    Text and ints are encoded exactly as uhashring does (``str(key).encode("utf-8")``), so
    `HashRing` places them identically. Raises `InvalidShardKey` for any other type.
    """
    if isinstance(key, str):
        return str.encode(key)
    if isinstance(key, bytes):
        return bytes(key)
    if isinstance(key, int) and not isinstance(key, bool):
        return int.__repr__(key).encode()
    if isinstance(key, (bytearray, memoryview)):
        return bytes(key)
    if isinstance(key, uuid.UUID):
        return str(key).encode()
    raise InvalidShardKey(key)


def hash64(data: bytes) -> int:
    """A stable 64-bit hash of `data` (the first 8 bytes of its MD5, little-endian).

    Identical in every process and Python version; MD5 here spreads keys, it guards nothing.
    """
    return int.from_bytes(md5(data).digest()[:8], "little")  # noqa: S324


def mix64(value: int) -> int:
    """SplitMix64's finalizer: a cheap, well-mixed 64-bit permutation."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def normalize_nodes(
    nodes: Iterable[str] | Mapping[str, float], *, weights_allowed: bool = True
) -> dict[str, float]:
    """Validate a list of node ids or a ``{node: weight}`` mapping; return ``{node: weight}``.

    Raises `ConfigurationError` for duplicates, non-string ids and weights <= 0.
    """
    if isinstance(nodes, str):
        raise ConfigurationError("nodes", nodes, "a list of node ids or a {node: weight} mapping")
    result: dict[str, float] = {}
    items = nodes.items() if isinstance(nodes, Mapping) else ((n, 1.0) for n in nodes)
    for node, weight in items:
        check_node(node)
        if node in result:
            raise ConfigurationError("nodes", node, "each node id once (this one is duplicated)")
        result[node] = check_weight(weight, weights_allowed=weights_allowed)
    return result


def check_node(node: object) -> str:
    if not isinstance(node, str) or not node:
        raise ConfigurationError(
            "node", node, "a non-empty str shard id (map ids to hosts in ShardRouter)"
        )
    return node


def check_weight(weight: object, *, weights_allowed: bool = True) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ConfigurationError("weight", weight, "a number > 0")
    if not 0 < weight < float("inf"):  # also refuses NaN
        raise ConfigurationError("weight", weight, "a finite number > 0")
    if not weights_allowed and weight != 1:
        raise ConfigurationError("weight", weight, "1 (this placement has no weights)")
    return weight


def nodes_repr(weights: Mapping[str, float]) -> str:
    """The nodes as a list, or as ``{node: weight}`` when the weights differ (reprs are
    compared: a resharding checkpoint is tied to one placement)."""
    return repr(list(weights) if len(set(weights.values())) <= 1 else dict(weights))
