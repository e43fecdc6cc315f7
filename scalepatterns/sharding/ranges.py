"""`RangeShards`: explicit key ranges such as A-M / N-Z, checked for gaps and overlaps."""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Callable, Iterable

from scalepatterns.errors import ConfigurationError
from scalepatterns.sharding._keys import Key, check_node, key_bytes
from scalepatterns.sharding.errors import InvalidShardKey

__all__ = ["RangeShards"]

Bound = str | bytes | int | None


class RangeShards:
    """Keys in ``[start, end)`` go to that range's node.

    Ranges are ``(start, end, node)`` triples; ``None`` as a start means "from the lowest
    key", as an end "to the highest". Together they must cover every key exactly once:
    a gap or an overlap is a `ConfigurationError` naming the two ranges. Bounds are all
    text/bytes (compared as UTF-8 bytes, i.e. by code point) or all integers. A node may
    own several ranges. Ranges are a fixed layout: no add/remove (plan a new layout and
    compare the two with `plan_rebalance`).

    Args:
        ranges: the ``(start, end, node)`` triples, in any order.
        normalize: applied to text keys before comparing (e.g. ``str.upper`` so that
            "alice" falls in A-M).

    ```python
    from scalepatterns.sharding import RangeShards

    shards = RangeShards([(None, "N", "a-m"), ("N", None, "n-z")], normalize=str.upper)
    assert shards.node_for("alice") == "a-m" and shards.node_for("Zoe") == "n-z"
    ```
    """

    __slots__ = ("_integers", "_nodes", "_normalize", "_owners", "_ranges", "_starts")

    def __init__(
        self,
        ranges: Iterable[tuple[Bound, Bound, str]],
        *,
        normalize: Callable[[str], str] | None = None,
    ) -> None:
        triples = list(ranges)
        if not triples:
            raise ConfigurationError("ranges", triples, "at least one (start, end, node) range")
        bounds = [b for start, end, _ in triples for b in (start, end) if b is not None]
        self._integers = bool(bounds) and all(
            isinstance(b, int) and not isinstance(b, bool) for b in bounds
        )
        if not self._integers and not all(isinstance(b, (str, bytes)) for b in bounds):
            raise ConfigurationError(
                "ranges", triples, "bounds that are all str/bytes, or all int (None: open end)"
            )
        self._normalize = normalize

        def sort_key(bound: Bound) -> tuple[int, int | bytes]:
            if bound is None:
                return (0, 0)
            return (1, bound if isinstance(bound, int) else key_bytes(bound))

        def end_key(bound: Bound) -> tuple[int, int | bytes]:
            return (2, 0) if bound is None else sort_key(bound)

        for start, end, node in triples:
            check_node(node)
            if start is not None and end is not None and not sort_key(start) < sort_key(end):
                raise ConfigurationError("ranges", (start, end, node), "start < end")
        ordered = sorted(triples, key=lambda t: sort_key(t[0]))
        if ordered[0][0] is not None:
            raise ConfigurationError(
                "ranges", ordered[0], "a first range starting at None (keys below it: a gap)"
            )
        if ordered[-1][1] is not None:
            raise ConfigurationError(
                "ranges", ordered[-1], "a last range ending at None (keys above it: a gap)"
            )
        for before, after in itertools.pairwise(ordered):
            if end_key(before[1]) < sort_key(after[0]):
                raise ConfigurationError(
                    "ranges", (before, after), "adjacent ranges (there is a gap between these)"
                )
            if end_key(before[1]) > sort_key(after[0]):
                raise ConfigurationError(
                    "ranges", (before, after), "ranges that do not overlap (these do)"
                )
        self._ranges: tuple[tuple[Bound, Bound, str], ...] = tuple(ordered)
        self._starts: list[int | bytes] = [sort_key(t[0])[1] for t in ordered[1:]]
        self._owners: tuple[str, ...] = tuple(t[2] for t in ordered)
        self._nodes = tuple(dict.fromkeys(self._owners))

    @property
    def nodes(self) -> tuple[str, ...]:
        return self._nodes

    @property
    def ranges(self) -> tuple[tuple[Bound, Bound, str], ...]:
        """The ranges, sorted by start."""
        return self._ranges

    def node_for(self, key: Key) -> str:
        """The node whose range holds `key`.

        Raises:
            InvalidShardKey: an int key on text ranges, or a non-int key on int ranges.
        """
        point: int | bytes
        if self._integers:
            if isinstance(key, bool) or not isinstance(key, int):
                raise InvalidShardKey(key)
            point = key
        else:
            if isinstance(key, int):
                raise InvalidShardKey(key)
            if self._normalize is not None and isinstance(key, str):
                key = self._normalize(key)
            point = key_bytes(key)
        return self._owners[bisect_right(self._starts, point)]  # type: ignore[arg-type,unused-ignore]

    def __repr__(self) -> str:
        return f"RangeShards({list(self._ranges)!r})"
