"""Cache keys, built from the bound arguments of a call.

Two forms of the same key:

- a *local* key, a tuple for the in-process tier: the arguments and their types, so
  `f(1)`, `f("1")`, `f(True)` and `f(1.0)` are four entries, built with no string work;
- a *shared* key, a string for Redis and other shared backends:
  ``{namespace}[@{version}]:{module.qualname}[|v{n}]:{arguments as JSON}``, or with a template
  ``{namespace}[@{version}]:{template}``. JSON quoting makes argument text unable to forge
  another key; arguments longer than `MAX_ARGS_TEXT` are hashed (BLAKE2b).

`f(1, b=2)` and `f(a=1, b=2)` bind to the same arguments and so share an entry; `self`
and `cls` are left out of method keys unless asked for.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import string
from collections.abc import Callable, Hashable
from json.encoder import encode_basestring_ascii as _quote
from typing import Any

from scalepatterns.errors import ConfigurationError

__all__ = ["KeyBuilder", "encode_arguments"]

MAX_ARGS_TEXT = 200
_SELF_NAMES = frozenset({"self", "cls"})


def _fallback(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return {"!set": sorted(encode_arguments((v,)) for v in value)}
    if isinstance(value, bytes):
        return {"!bytes": value.hex()}
    cls = type(value)
    return {"!obj": f"{cls.__module__}.{cls.__qualname__}", "repr": repr(value)}


_encode = json.JSONEncoder(
    ensure_ascii=True, separators=(",", ":"), sort_keys=True, default=_fallback
).encode


def _tagged(value: Any) -> Any:
    """`value` with what JSON would blur made explicit: a tuple is not a list, and a dict
    with keys other than strings keeps their types ({1: x} is not {"1": x})."""
    kind = type(value)
    if kind is tuple:
        return {"!tuple": [_tagged(item) for item in value]}
    if kind is list:
        return [_tagged(item) for item in value]
    if kind is dict:
        if all(type(key) is str for key in value):
            return {key: _tagged(item) for key, item in value.items()}
        return {
            "!dict": sorted(
                [encode_arguments((key,)), _tagged(item)] for key, item in value.items()
            )
        }
    return value


def encode_arguments(values: tuple[Any, ...]) -> str:
    """The arguments as compact, sorted JSON; values JSON cannot hold get a tagged form."""
    # Ints and strings (most keys) are written directly: the same text the encoder
    # would produce, at a fraction of the cost.
    parts = []
    for value in values:
        kind = type(value)
        if kind is int:
            parts.append(str(value))
        elif kind is str:
            parts.append(_quote(value))
        else:
            return _encode([_tagged(value) for value in values])
    return "[" + ",".join(parts) + "]"


def _escape(value: Any) -> str:
    # Letters and digits as they are, anything else percent-encoded: no value can reach
    # into its neighbour's part of the key ("{a}-{b}" with "x-y", "z" and with "x", "y-z"),
    # forge a separator, or spell one of the cache's own keys ("__version__").
    text = str(value)
    if text.isascii() and text.isalnum():
        return text
    return "".join(
        char if char.isascii() and char.isalnum() else "".join(f"%{b:02X}" for b in char.encode())
        for char in text
    )


def _typed(value: Any) -> Any:
    """`value` for a local key: a tuple or frozenset carries its items' types, so (1,) and
    (True,) are two keys, as 1 and True are."""
    kind = value.__class__
    if kind is tuple:
        return tuple((_typed(item), item.__class__) for item in value)
    if kind is frozenset:
        return frozenset((_typed(item), item.__class__) for item in value)
    return value


class KeyBuilder:
    """Builds local and shared keys for one cached function.

    Args:
        fn: the function (or method) being cached.
        qualname: the name used in shared keys.
        version: bump it when the function's result format changes.
        template: optional ``"user:{user_id}"`` template over the parameter names.
        include_self: keep ``self``/``cls`` in the key of a method.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        qualname: str,
        version: int | str = 0,
        template: str | None = None,
        include_self: bool = False,
    ) -> None:
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters.values())
        self.skip_first = bool(
            params
            and not include_self
            and params[0].name in _SELF_NAMES
            and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD)
        )
        self.names = [p.name for p in params[1 if self.skip_first else 0 :]]
        simple = all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
        # With exactly this many positional arguments and no keywords, the call binds
        # without `inspect`: the fast path.
        self.arity = len(params) if simple else -1
        self.key_params = len(self.names)
        suffix = f"|v{version}" if version else ""
        self.prefix = f"{qualname}{suffix}:"
        self.template = template
        if template is not None:
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
            if template.startswith("_"):
                raise ConfigurationError(
                    "key", template, "a template not starting with '_' (the cache's own keys do)"
                )
            if not fields <= set(self.names):
                raise ConfigurationError(
                    "key", template, f"a template over the parameters {self.names}"
                )
            self.prefix = f"{template}{suffix}"

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """The key's argument values, in parameter order, defaults applied."""
        if not kwargs and len(args) == self.arity:
            return args[1:] if self.skip_first else args
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = []
        for name, value in bound.arguments.items():
            kind = self.signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                values.append(tuple(sorted(value.items())))
            else:
                values.append(value)
        return tuple(values[1:] if self.skip_first else values)

    def local(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        """A hashable key for the in-process tier (raises TypeError if a value is unhashable)."""
        key = (*map(_typed, values), *map(type, values))
        hash(key)
        return key

    def fast_local(self) -> Callable[[object, tuple[Any, ...]], Hashable] | None:
        """A specialised `(token, args) -> local key` for fast-path calls, or None."""
        if self.arity < 0:
            return None
        n, skip = self.key_params, self.skip_first
        if n == 0:
            return lambda t, args: (t,)
        typed = _typed
        if n == 1:
            if skip:
                return lambda t, args: (t, typed(args[1]), args[1].__class__)
            return lambda t, args: (t, typed(args[0]), args[0].__class__)
        if n == 2 and not skip:
            return lambda t, args: (
                t,
                typed(args[0]),
                typed(args[1]),
                args[0].__class__,
                args[1].__class__,
            )
        if skip:
            return lambda t, args: (t, *map(typed, args[1:]), *map(type, args[1:]))
        return lambda t, args: (t, *map(typed, args), *map(type, args))

    def shared(self, values: tuple[Any, ...], head: str) -> str:
        """The string key for shared backends; `head` is ``namespace[@version]:``."""
        if self.template is not None:
            fields = dict(zip(self.names, map(_escape, values), strict=False))
            return head + self.prefix.format(**fields)
        text = encode_arguments(values)
        if len(text) > MAX_ARGS_TEXT:
            text = "#" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
        return head + self.prefix + text
