"""Type-level checks, run by mypy --strict (``make typecheck``), never executed."""

from __future__ import annotations

from typing_extensions import assert_type

from scalepatterns import EventRecorder, FakeClock, JsonSerializer, Listeners, RateLimited
from scalepatterns.events import Event

recorder = EventRecorder()
assert_type(recorder.of_type(Event), list[Event])
remove = Listeners().add(recorder)
remove()
assert_type(FakeClock().monotonic(), float)
assert_type(JsonSerializer().dumps({"a": 1}), bytes)
assert_type(RateLimited("k", 1.0).retry_after, float)
