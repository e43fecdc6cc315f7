"""Foundation: the cost of emitting an event with no listener, and of each serializer."""

from __future__ import annotations

import json

from benchmarks.harness import Bench
from scalepatterns.events import Event, Listeners
from scalepatterns.serializers import JsonSerializer, MsgpackSerializer, SignedPickleSerializer


class Sample(Event):
    pass


def run(bench: Bench) -> None:
    silent = Listeners()

    class Component:
        active = False

    component = Component()

    def guarded_emit() -> None:
        if silent.active:
            silent.emit(Sample("bench"))

    def bare_check() -> None:
        if component.active:
            raise AssertionError

    bench.compare(
        "emit with no listener registered",
        {"scalepatterns guard + emit": guarded_emit, "bare attribute check (floor)": bare_check},
        baseline="bare attribute check (floor)",
        number=200_000,
        target="no listener: one attribute check",
    )

    value = {"id": 42, "name": "Ada Lovelace", "email": "ada@example.com", "tags": ["a", "b"]}
    ours_json, ours_msgpack = JsonSerializer(), MsgpackSerializer()
    signed = SignedPickleSerializer(b"benchmark-secret-key")
    encoded = {
        "json": ours_json.dumps(value),
        "msgpack": ours_msgpack.dumps(value),
        "signed": signed.dumps(value),
    }
    bench.compare(
        "serializer round trip (small dict)",
        {
            "scalepatterns JsonSerializer": lambda: ours_json.loads(ours_json.dumps(value)),
            "scalepatterns MsgpackSerializer": lambda: ours_msgpack.loads(
                ours_msgpack.dumps(value)
            ),
            "scalepatterns SignedPickleSerializer": lambda: signed.loads(signed.dumps(value)),
            "json.dumps/json.loads (floor)": lambda: json.loads(json.dumps(value)),
        },
        baseline="json.dumps/json.loads (floor)",
        number=20_000,
    )
    bench.record(
        "encoded size of the sample value (bytes)", {k: len(v) for k, v in encoded.items()}
    )
