"""pika's connection classes, tuned to keep each of the loop's callbacks short.

- Writes: pika hands every AMQP frame to its transport on its own, and the transport
  sends each with a system call of its own: three per published message (method,
  header, body) and one per ack. Here the frames of one loop iteration go out in one
  write, which also cuts the publisher's CPU time by about a tenth.
- Reads: pika reads up to 100 KB per readable event and dispatches every frame in it
  before the loop runs anything else (about 10 ms of deliveries and confirms); here at
  most 8 KB, so other tasks wait about a millisecond at most.

The async broker's loop is the application's own, so this is what keeps it responsive.
"""

from __future__ import annotations

from typing import Any

__all__ = ["batching"]

_READ_PER_EVENT = 8 * 1024


def batching(connection_class: type[Any]) -> type[Any]:
    """`connection_class` (a pika `BaseConnection`) with its frames written once per loop
    iteration and its reads bounded per event; the class itself when this pika has no
    `_adapter_emit_data` to wrap."""
    if not hasattr(connection_class, "_adapter_emit_data"):
        return connection_class

    class Batching(connection_class):  # type: ignore[misc]
        _sp_frames: list[bytes] | None = None

        def _adapter_emit_data(self, data: bytes) -> None:
            frames = self._sp_frames
            if frames is None:
                self._sp_frames = [data]
                self._nbio.call_later(0, self._sp_write)
            else:
                frames.append(data)

        def _proto_connection_made(self, transport: Any) -> None:
            transport._MAX_CONSUME_BYTES = _READ_PER_EVENT  # this transport's own limit
            super()._proto_connection_made(transport)

        def _sp_write(self) -> None:
            frames, self._sp_frames = self._sp_frames, None
            if frames and self._transport is not None:
                super()._adapter_emit_data(b"".join(frames))

    Batching.__name__ = Batching.__qualname__ = f"Batching{connection_class.__name__}"
    return Batching
