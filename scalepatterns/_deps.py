"""Lazy loading of optional dependencies.

`import scalepatterns` imports no server client. A backend calls `require(...)` when the
user first touches it, so a missing extra fails at that moment with an error that names
the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from scalepatterns.errors import MissingDependency

__all__ = ["require"]


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import `module`, or raise `MissingDependency` naming the extra that provides it.

    Args:
        module: dotted module name, e.g. ``"redis.asyncio"``.
        extra: the `scalepatterns[...]` extra that installs it.
        feature: what the user was doing, for the message (e.g. ``"Cache.redis()"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(module.partition(".")[0], extra, feature) from exc
