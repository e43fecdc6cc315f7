"""The message envelope and its wire format.

On the wire a message is a plain AMQP message, readable by any client:

- body: the payload encoded by the serializer (JSON by default), nothing wrapped around it;
- ``content_type``: the serializer's (``application/json``); ``delivery_mode`` 2 (persistent);
- ``message_id``: a unique id (the dedup key); ``type``: the message type (the task or
  event name); ``timestamp``: creation time in whole seconds;
- headers: the caller's headers, plus ``x-sp-attempt`` (1 for the first try, absent on
  messages from other clients), ``x-sp-created`` (creation time, Unix milliseconds) and the
  W3C trace context (``traceparent``, ``tracestate``): the caller's, or the current
  OpenTelemetry span's when the application uses OpenTelemetry.

A message from another client with no ``content_type`` is tried as JSON and otherwise
handed over as raw bytes; a message whose declared content type cannot be decoded is
undecodable and goes to the dead-letter queue at once.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scalepatterns.clock import Clock
from scalepatterns.errors import SerializationError
from scalepatterns.queue.broker import Properties
from scalepatterns.serializers import Serializer

__all__ = [
    "ATTEMPT_HEADER",
    "CREATED_HEADER",
    "Message",
    "decode",
    "encode",
    "header_int",
    "new_id",
]

ATTEMPT_HEADER = "x-sp-attempt"
CREATED_HEADER = "x-sp-created"
TRACE_HEADERS = ("traceparent", "tracestate")
_RAW_TYPES = frozenset({"text/plain", "application/octet-stream"})


def new_id() -> str:
    """A fresh message id (32 hex characters)."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Message:
    """A message as a handler sees it.

    Attributes:
        id: the message id (dedup key). Messages from other clients without one get a
            fresh id and `has_id` False (they cannot be deduplicated).
        type: the message type (task or event name), or None.
        body: the decoded payload (raw bytes for a foreign message that is not JSON).
        headers: the caller's headers (without scalepatterns' own and the trace context).
        attempt: 1 on the first try, 2 on the first retry, ...
        created_at: when the producer created it (Unix seconds), or None.
        trace: W3C trace context headers, if any.
        routing_key: the key it was published with (the event name on an event bus).
        redelivered: the broker delivered it before (a consumer died or disconnected).
        has_id: the message carried its own id.
    """

    id: str
    type: str | None
    body: Any
    headers: Mapping[str, Any] = field(default_factory=dict)
    attempt: int = 1
    created_at: float | None = None
    trace: Mapping[str, str] = field(default_factory=dict)
    routing_key: str = ""
    redelivered: bool = False
    has_id: bool = True


def encode(
    body: Any,
    serializer: Serializer,
    clock: Clock,
    *,
    message_id: str | None = None,
    type: str | None = None,
    headers: Mapping[str, Any] | None = None,
    priority: int | None = None,
    attempt: int = 1,
) -> tuple[bytes, Properties]:
    """Encode a payload into wire bytes and properties (raises `SerializationError`)."""
    data = serializer.dumps(body)
    now = clock.time()
    all_headers: dict[str, Any] = dict(headers or {})
    if "traceparent" not in all_headers:
        inject_trace_context(all_headers)
    all_headers[ATTEMPT_HEADER] = attempt
    all_headers[CREATED_HEADER] = int(now * 1000)
    return data, Properties(
        message_id=message_id or new_id(),
        type=type,
        content_type=serializer.content_type,
        timestamp=int(now),
        headers=all_headers,
        priority=priority,
    )


def inject_trace_context(headers: dict[str, Any]) -> None:
    """Add the current OpenTelemetry context (``traceparent``...) to `headers`.

    Only when the application already imported OpenTelemetry: scalepatterns never
    imports it itself, so without it this costs one dictionary lookup.
    """
    if "opentelemetry" not in sys.modules:
        return
    try:
        from opentelemetry.propagate import inject
    except ImportError:  # pragma: no cover - an unusual partial install
        return
    inject(headers)


def decode(
    body: bytes,
    properties: Properties,
    serializer: Serializer,
    *,
    routing_key: str = "",
    redelivered: bool = False,
) -> Message:
    """Decode wire bytes into a `Message`; raises `SerializationError` if undecodable."""
    content_type = properties.content_type
    if content_type == serializer.content_type:
        payload = serializer.loads(body)
    elif content_type is None:
        try:
            payload = serializer.loads(body)
        except SerializationError:
            payload = body
    elif content_type in _RAW_TYPES or content_type.startswith("text/"):
        payload = body
    else:
        raise SerializationError(
            f"content type {content_type!r} is not {serializer.content_type!r}: pass the "
            "matching serializer to the worker"
        )
    raw_headers = dict(properties.headers or {})
    attempt = header_int(raw_headers.pop(ATTEMPT_HEADER, 1), 1)
    created = raw_headers.pop(CREATED_HEADER, None)
    created_at = created / 1000 if isinstance(created, int) else properties.timestamp
    trace = {k: _text(raw_headers.pop(k)) for k in TRACE_HEADERS if k in raw_headers}
    has_id = bool(properties.message_id)
    return Message(
        id=properties.message_id or new_id(),
        type=properties.type,
        body=payload,
        headers=raw_headers,
        attempt=max(1, attempt),
        created_at=None if created_at is None else float(created_at),
        trace=trace,
        routing_key=routing_key,
        redelivered=redelivered,
        has_id=has_id,
    )


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def header_int(value: object, default: int) -> int:
    """A header's integer (an int, or text of one, as other clients write it), or `default`."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, (str, bytes)):
        try:
            return int(value)
        except ValueError:
            return default
    return default
