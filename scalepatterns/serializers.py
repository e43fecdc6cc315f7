"""Turning values into bytes and back: JSON by default, msgpack optional, signed pickle opt-in.

Every block that stores or sends values (cache entries, queue messages) takes a
`serializer=` satisfying `Serializer`. The default, `JsonSerializer`, gives bytes any
other language can read. Pickle is never used unless asked for, and then only as
`SignedPickleSerializer(key)`: each payload carries an HMAC-SHA256 signature that is
checked before a single byte is unpickled, so a value planted in a shared Redis by
someone without the key is refused, not executed.

```python
from scalepatterns.serializers import JsonSerializer, SignedPickleSerializer

assert JsonSerializer().loads(JsonSerializer().dumps({"id": 1})) == {"id": 1}
signed = SignedPickleSerializer(key=b"a-secret-of-at-least-16-bytes")
assert signed.loads(signed.dumps({1, 2})) == {1, 2}
```
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
from typing import Any, Protocol, runtime_checkable

from scalepatterns._deps import require
from scalepatterns.errors import ConfigurationError, SerializationError, SignatureError

__all__ = [
    "JsonSerializer",
    "MsgpackSerializer",
    "Serializer",
    "SignedPickleSerializer",
]


@runtime_checkable
class Serializer(Protocol):
    """Converts values to bytes and back.

    `dumps` raises `SerializationError` for a value it cannot encode; `loads` raises
    `SerializationError` for bytes it cannot decode (never another exception type).
    """

    content_type: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JsonSerializer:
    """Compact UTF-8 JSON. Accepts what `json.dumps` accepts; tuples come back as lists."""

    __slots__ = ("_decode", "_encode")
    content_type = "application/json"

    def __init__(self) -> None:
        self._encode = json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode
        self._decode = json.JSONDecoder().decode

    def dumps(self, value: Any) -> bytes:
        try:
            return self._encode(value).encode()
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"cannot encode a {type(value).__name__} as JSON ({exc}); return plain "
                "dicts, lists, strings, numbers, booleans or None, or pass another serializer"
            ) from exc

    def loads(self, data: bytes) -> Any:
        try:
            return self._decode(data.decode())
        except (UnicodeDecodeError, ValueError) as exc:
            raise SerializationError(f"stored bytes are not valid JSON: {exc}") from exc

    def __repr__(self) -> str:
        return "JsonSerializer()"


class MsgpackSerializer:
    """msgpack: smaller and faster than JSON for numbers and bytes. Needs the `msgpack` extra."""

    __slots__ = ("_msgpack",)
    content_type = "application/msgpack"

    def __init__(self) -> None:
        self._msgpack = require("msgpack", extra="msgpack", feature="MsgpackSerializer")

    def dumps(self, value: Any) -> bytes:
        try:
            data: bytes = self._msgpack.packb(value, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(
                f"cannot encode a {type(value).__name__} as msgpack ({exc})"
            ) from exc
        return data

    def loads(self, data: bytes) -> Any:
        try:
            return self._msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated types on bad input
            raise SerializationError(f"stored bytes are not valid msgpack: {exc}") from exc

    def __repr__(self) -> str:
        return "MsgpackSerializer()"


class SignedPickleSerializer:
    """Pickle, signed with HMAC-SHA256 and verified before unpickling.

    Use it only for values that JSON cannot carry, and give every process that shares the
    cache or queue the same secret `key` (at least 16 bytes). A payload that is unsigned,
    signed with another key or altered raises `SignatureError` and is never unpickled.
    """

    __slots__ = ("_key",)
    content_type = "application/x-scalepatterns-signed-pickle"
    _MAGIC = b"SP1"
    _DIGEST_SIZE = hashlib.sha256().digest_size

    def __init__(self, key: bytes | str) -> None:
        if isinstance(key, str):
            key = key.encode()
        if not isinstance(key, bytes) or len(key) < 16:
            raise ConfigurationError(
                "key",
                "<redacted>",
                "a secret of at least 16 bytes shared by every process that reads the data",
            )
        self._key = key

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()

    def dumps(self, value: Any) -> bytes:
        try:
            body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # pickle raises many types for unpicklable values
            raise SerializationError(f"cannot pickle a {type(value).__name__}: {exc}") from exc
        return self._MAGIC + self._sign(body) + body

    def loads(self, data: bytes) -> Any:
        header = len(self._MAGIC) + self._DIGEST_SIZE
        if len(data) < header or not data.startswith(self._MAGIC):
            raise SignatureError("refusing to unpickle: the payload carries no signature")
        signature, body = data[len(self._MAGIC) : header], data[header:]
        if not hmac.compare_digest(signature, self._sign(body)):
            raise SignatureError(
                "refusing to unpickle: the signature does not match (tampered data, or "
                "written with another key)"
            )
        try:
            return pickle.loads(body)  # noqa: S301 - verified by HMAC above
        except Exception as exc:
            raise SerializationError(f"signed payload could not be unpickled: {exc}") from exc

    def __repr__(self) -> str:
        return "SignedPickleSerializer(key=<redacted>)"
