"""Chapter 0: the conventions every block shares: events, serializers, a fake clock."""

from __future__ import annotations

from scalepatterns import (
    ConfigurationError,
    Event,
    EventRecorder,
    FakeClock,
    JsonSerializer,
    Listeners,
    SignatureError,
    SignedPickleSerializer,
)

TITLE = "Foundation: events, serializers, clocks, errors"


def run() -> None:
    listeners = Listeners()
    recorder = EventRecorder()
    listeners.add(recorder)
    listeners.emit(Event(source="tour"))
    source = recorder.events[0].source
    print(f"   events: a listener received {len(recorder.events)} event from {source!r}")

    payload = JsonSerializer().dumps({"user": 42, "name": "Ada"})
    print(f"   serializers: JSON by default -> {payload!r}")

    signed = SignedPickleSerializer(key=b"tour-secret-key-0123")
    tampered = bytearray(signed.dumps({"role": "user"}))
    tampered[-2] ^= 0xFF
    try:
        signed.loads(bytes(tampered))
    except SignatureError as exc:
        print(f"   signed pickle: a tampered payload is refused, not unpickled ({exc})")

    clock = FakeClock()
    clock.sleep(30)
    print(f"   clocks: a fake clock 'slept' 30s in no time (now {clock.monotonic():.0f}s)")

    try:
        SignedPickleSerializer(key=b"short")
    except ConfigurationError as exc:
        print(f"   errors: bad configuration is refused at construction: {exc}")
