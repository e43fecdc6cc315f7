"""Errors of the sharding block, all under `ScalePatternsError`.

```
ScalePatternsError
├── ConfigurationError        duplicate nodes, weights <= 0, gaps/overlaps in ranges...
└── ShardingError             a sharding operation could not be carried out
    ├── InvalidShardKey       the key has no stable hash (also a TypeError)
    ├── EmptyPlacement        a lookup on a placement with no node
    ├── ShardUnavailable      one shard's server failed (also a BackendUnavailable)
    ├── FanOutError           one or more shards failed during a fan-out; carries `errors`
    └── ReshardError          a resharding batch failed verification; carries the shards
```
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scalepatterns.errors import BackendUnavailable, ScalePatternsError

__all__ = [
    "EmptyPlacement",
    "FanOutError",
    "InvalidShardKey",
    "ReshardError",
    "ShardUnavailable",
    "ShardingError",
]


class ShardingError(ScalePatternsError):
    """Root of the sharding block's runtime errors."""


class InvalidShardKey(ShardingError, TypeError):
    """A key whose type has no deterministic, process-independent hash.

    Keys may be `str`, `bytes` (also `bytearray`/`memoryview`), `int` or `uuid.UUID`.

    Attributes:
        key_type: the name of the rejected key's type.
    """

    def __init__(self, key: object) -> None:
        self.key_type = type(key).__name__
        super().__init__(
            f"cannot shard a key of type {self.key_type}: pass a str, bytes, int or uuid.UUID "
            "(convert other keys to a canonical string first; the built-in hash() is not "
            "stable across processes)"
        )


class EmptyPlacement(ShardingError, LookupError):
    """A key was looked up on a placement that has no node: add a node first."""

    def __init__(self, placement: str) -> None:
        self.placement = placement
        super().__init__(f"{placement} has no node: add a node before looking keys up")


class FanOutError(ShardingError):
    """A fan-out ran on every shard and at least one shard failed.

    Attributes:
        errors: shard id -> the exception it raised.
        results: shard id -> the result of every shard that succeeded.
    """

    def __init__(self, errors: Mapping[str, BaseException], results: Mapping[str, Any]) -> None:
        self.errors = dict(errors)
        self.results = dict(results)
        failed = ", ".join(sorted(self.errors))
        super().__init__(
            f"fan-out failed on {len(self.errors)} of {len(self.errors) + len(self.results)} "
            f"shards ({failed}); the partial results are on .results"
        )


class ShardUnavailable(ShardingError, BackendUnavailable):
    """The server behind one shard failed; the other shards are unaffected.

    Attributes:
        shard: the logical shard id whose server failed.
        backend: the kind of server (``"redis"``).
    """

    def __init__(self, shard: str, backend: str, message: str) -> None:
        self.shard = shard
        BackendUnavailable.__init__(self, backend, f"shard {shard!r}: {message}")


class ReshardError(ShardingError):
    """A resharding batch failed its verification; nothing was deleted from the source.

    Attributes:
        source: the shard the rows were copied from.
        target: the shard the rows were copied to.
    """

    def __init__(self, source: str, target: str, message: str) -> None:
        self.source = source
        self.target = target
        super().__init__(f"resharding {source} -> {target}: {message}; re-run to resume")
