"""Argument checks shared by the blocks; each failure is a `ConfigurationError` naming the fix."""

from __future__ import annotations

import math

from scalepatterns.errors import ConfigurationError

__all__ = ["exception_types", "seconds"]


def seconds(
    parameter: str, value: object, *, allow_none: bool = False, positive: bool = False
) -> None:
    """`ConfigurationError` unless `value` is a finite number of seconds, >= 0 (> 0 with
    `positive`), or None with `allow_none`. Infinity and NaN are refused: no timer, expiry
    or Redis TTL can be set from them."""
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 <= value < math.inf
        or (positive and value == 0)
    ):
        accepted = f"a finite number of seconds {'> 0' if positive else '>= 0'}"
        raise ConfigurationError(parameter, value, accepted + (", or None" if allow_none else ""))


def exception_types(
    parameter: str, value: type[BaseException] | tuple[type[BaseException], ...]
) -> tuple[type[BaseException], ...]:
    """`value` as a non-empty tuple of exception classes, or `ConfigurationError`."""
    types = value if isinstance(value, tuple) else (value,)
    if not types or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise ConfigurationError(
            parameter, value, "an exception class or a non-empty tuple of them"
        )
    return types
