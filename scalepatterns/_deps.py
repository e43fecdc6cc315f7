"""Lazy loading of optional dependencies and of the modules that need them.

`import scalepatterns` imports no server client. A backend calls `require(...)` when the
user first touches it, so a missing extra fails at that moment with an error that names
the extra to install.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from scalepatterns.errors import MissingDependency

__all__ = ["lazy_attributes", "require"]


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


def lazy_attributes(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` (PEP 562) importing `table[name]` on first access of `name`.

    The value is cached in the package's namespace, so later accesses cost nothing.
    """

    def load(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return load
