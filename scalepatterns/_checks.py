"""Argument checks shared by the blocks; each failure is a `ConfigurationError` naming the fix."""

from __future__ import annotations

from scalepatterns.errors import ConfigurationError

__all__ = ["exception_types"]


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
