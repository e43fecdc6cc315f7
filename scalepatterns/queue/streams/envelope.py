"""A message as a stream entry: field ``b`` holds the body, ``m`` the properties.

``m`` is compact JSON carrying everything `Properties` carries (``i`` message id, ``t``
type, ``c`` content type, ``ts`` timestamp, ``h`` headers, ``p`` priority, ``d`` 0 when
not persistent) and ``k``, the routing key when it is not the queue's name (an event's
name). A message given back to its queue (rejected with requeue, or left unsettled by a
closed consumer) gets a field ``r``: it is flagged redelivered, as RabbitMQ flags it.
Header values are what JSON holds; bytes travel as text (UTF-8, invalid bytes replaced).
"""

from __future__ import annotations

import json
from typing import Any

from scalepatterns.queue.broker import Properties

__all__ = ["entry_meta", "read_entry"]


def _text(value: object) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode(errors="replace")
    return str(value)


_decode = json.JSONDecoder().decode
_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_text)


def entry_meta(properties: Properties, routing_key: str | None) -> str:
    """The ``m`` field of a message with `properties`; `routing_key` only when it is not
    the name of the queue the message goes to."""
    props = properties
    meta: dict[str, Any] = {}
    if props.message_id is not None:
        meta["i"] = props.message_id
    if props.type is not None:
        meta["t"] = props.type
    if props.content_type is not None:
        meta["c"] = props.content_type
    if props.timestamp is not None:
        meta["ts"] = props.timestamp
    if props.headers:
        meta["h"] = dict(props.headers)
    if props.priority is not None:
        meta["p"] = props.priority
    if not props.persistent:
        meta["d"] = 0
    if routing_key is not None:
        meta["k"] = routing_key
    return _compact.encode(meta)


def read_entry(meta_field: bytes | None, queue: str) -> tuple[Properties, str]:
    """(properties, routing key) from an entry's ``m`` field (None or empty when a
    foreign producer wrote only a body)."""
    meta: dict[str, Any] = _decode(meta_field.decode()) if meta_field else {}
    headers = meta.get("h")
    properties = Properties(
        message_id=meta.get("i"),
        type=meta.get("t"),
        content_type=meta.get("c"),
        timestamp=meta.get("ts"),
        headers=headers if isinstance(headers, dict) else {},
        priority=meta.get("p"),
        persistent=meta.get("d", 1) != 0,
    )
    return properties, meta.get("k", queue)
