"""The conventions every block shares: errors, events, serializers, clocks, lazy extras."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

import scalepatterns
from scalepatterns import errors
from scalepatterns._deps import require
from scalepatterns.clock import SYSTEM_CLOCK, Clock, FakeClock
from scalepatterns.events import Event, EventRecorder, Listeners
from scalepatterns.serializers import (
    JsonSerializer,
    MsgpackSerializer,
    Serializer,
    SignedPickleSerializer,
)

# -- errors ---------------------------------------------------------------------------


def test_every_error_descends_from_the_root() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.ScalePatternsError), name


def test_configuration_error_names_parameter_value_and_what_is_accepted() -> None:
    exc = errors.ConfigurationError("ttl", -1, "a number of seconds >= 0, or None")
    assert isinstance(exc, ValueError)
    assert (exc.parameter, exc.value) == ("ttl", -1)
    assert str(exc) == "invalid ttl=-1: expected a number of seconds >= 0, or None"


def test_errors_carry_their_facts() -> None:
    limited = errors.RateLimited("user:1", 0.25)
    assert limited.retry_after == 0.25
    assert "user:1" in str(limited)
    assert errors.CircuitOpen("db", 3.0).retry_after == 3.0
    full = errors.QueueFull("emails", 1200, retry_after=1.5)
    assert (full.queue, full.depth, full.retry_after) == ("emails", 1200, 1.5)
    assert isinstance(errors.DeadlineExceeded(1.0), TimeoutError)
    assert errors.BackendUnavailable("redis", "connection refused").backend == "redis"


# -- lazy optional dependencies ---------------------------------------------------------


def test_missing_extra_names_the_extra_to_install() -> None:
    with pytest.raises(errors.MissingDependency) as info:
        require("no_such_module_sp", extra="redis", feature="Cache.redis()")
    assert isinstance(info.value, ImportError)
    assert "pip install 'scalepatterns[redis]'" in str(info.value)
    assert "Cache.redis()" in str(info.value)


def test_importing_the_package_imports_no_server_client() -> None:
    code = (
        "import sys, scalepatterns\n"
        "loaded = [m for m in ('redis', 'pika', 'sqlalchemy', 'psycopg', 'msgpack') "
        "if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_api_is_sorted_and_resolves() -> None:
    names = scalepatterns.__all__
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(scalepatterns, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        scalepatterns.nope  # noqa: B018


# -- events ---------------------------------------------------------------------------


class Ping(Event):
    pass


class Pong(Event):
    pass


def test_listeners_filter_by_type_and_remove_cleanly() -> None:
    registry = Listeners()
    assert registry.active is False
    everything, pings = EventRecorder(), EventRecorder()
    remove_all = registry.add(everything)
    registry.add(pings, Ping)
    assert registry.active is True
    registry.emit(Ping("a"))
    registry.emit(Pong("b"))
    assert [e.source for e in everything.events] == ["a", "b"]
    assert [e.source for e in pings.events] == ["a"]
    assert pings.of_type(Pong) == []
    remove_all()
    registry.remove(pings)
    assert registry.active is False
    registry.emit(Ping("c"))
    assert len(everything.events) == 2


def test_a_failing_listener_is_logged_and_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Listeners()
    recorder = EventRecorder()

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    registry.add(broken)
    registry.add(recorder)
    registry.emit(Ping("x"))
    assert len(recorder.events) == 1
    assert "listener bug" in caplog.text


def test_bad_listener_registration_is_a_type_error() -> None:
    registry = Listeners()
    with pytest.raises(TypeError, match="callable"):
        registry.add("not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Event subclasses"):
        registry.add(print, int)  # type: ignore[arg-type]


def test_concurrent_add_and_emit_lose_no_registration() -> None:
    registry = Listeners()
    recorders = [EventRecorder() for _ in range(50)]
    threads = [threading.Thread(target=registry.add, args=(r,)) for r in recorders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    registry.emit(Ping("all"))
    assert all(len(r.events) == 1 for r in recorders)


# -- serializers ------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(json_values)
def test_json_round_trips_plain_values(value: object) -> None:
    serializer = JsonSerializer()
    assert serializer.loads(serializer.dumps(value)) == value


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text()
    | st.binary()
    | st.floats(allow_nan=False),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(msgpack_values)
def test_msgpack_round_trips_plain_values(value: object) -> None:
    serializer = MsgpackSerializer()
    assert serializer.loads(serializer.dumps(value)) == value


def test_msgpack_refuses_integers_beyond_64_bits() -> None:
    with pytest.raises(errors.SerializationError, match="cannot encode a int as msgpack"):
        MsgpackSerializer().dumps(2**64)


@pytest.mark.parametrize(
    "serializer", [JsonSerializer(), MsgpackSerializer(), SignedPickleSerializer(b"k" * 16)]
)
def test_serializers_satisfy_the_protocol_and_reject_garbage(serializer: Serializer) -> None:
    assert isinstance(serializer, Serializer)
    with pytest.raises(errors.SerializationError):
        serializer.loads(b"\xc1\xff\x00garbage")


def test_json_refuses_values_it_cannot_encode_with_the_type_named() -> None:
    with pytest.raises(errors.SerializationError, match="cannot encode a set as JSON"):
        JsonSerializer().dumps({1, 2})
    with pytest.raises(errors.SerializationError):
        JsonSerializer().dumps(float("nan"))


class Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def test_signed_pickle_refuses_unsigned_and_tampered_payloads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    signed = SignedPickleSerializer("s3cret-key-0123456789")
    payload = signed.dumps({"a": (1, 2)})
    assert signed.loads(payload) == {"a": (1, 2)}

    with pytest.raises(errors.SignatureError, match="no signature"):
        signed.loads(pickle.dumps(Exploit()))
    tampered = payload[:-1] + bytes([payload[-1] ^ 1])
    with pytest.raises(errors.SignatureError, match="does not match"):
        signed.loads(tampered)
    other_key = SignedPickleSerializer(b"another-key-0123456789")
    with pytest.raises(errors.SignatureError):
        other_key.loads(payload)
    forged = other_key.dumps(Exploit())
    with pytest.raises(errors.SignatureError):
        signed.loads(forged)
    assert "pwned" not in capsys.readouterr().out


def test_signed_pickle_needs_a_real_key_and_never_shows_it() -> None:
    with pytest.raises(errors.ConfigurationError, match="at least 16 bytes") as info:
        SignedPickleSerializer(b"short")
    assert "short" not in str(info.value)
    assert "0123" not in repr(SignedPickleSerializer(b"0123456789abcdef"))


# -- clocks ---------------------------------------------------------------------------


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(start=10.0, wall_start=1000.0)
    assert isinstance(clock, Clock)
    assert (clock.monotonic(), clock.time()) == (10.0, 1000.0)
    clock.sleep(2.0)
    asyncio.run(clock.asleep(0.5))
    assert (clock.monotonic(), clock.time()) == (12.5, 1002.5)
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-1)


def test_system_clock_is_monotonic() -> None:
    assert isinstance(SYSTEM_CLOCK, Clock)
    first = SYSTEM_CLOCK.monotonic()
    assert SYSTEM_CLOCK.monotonic() >= first
    assert SYSTEM_CLOCK.time() > 1_600_000_000


@pytest.mark.parametrize(
    ("missing", "touch", "extra"),
    [
        ("sqlalchemy", "scalepatterns.ReadWriteRouter", "sqlalchemy"),
        ("pika", "scalepatterns.RabbitMQBroker('amqp://guest:guest@127.0.0.1:1/')", "rabbitmq"),
        ("redis", "scalepatterns.Cache.redis('redis://127.0.0.1:1/0')", "redis"),
        ("redis", "scalepatterns.RateLimiter('1/second', redis='redis://127.0.0.1:1/0')", "redis"),
        ("redis", "scalepatterns.RedisStreamsBroker('redis://127.0.0.1:1/0')", "redis"),
    ],
)
def test_touching_a_backend_without_its_extra_names_the_extra(
    missing: str, touch: str, extra: str
) -> None:
    code = (
        "import sys\n"
        f"sys.modules[{missing!r}] = None  # as if the extra were not installed\n"
        "import scalepatterns\n"
        "try:\n"
        f"    {touch}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert f"pip install 'scalepatterns[{extra}]'" in result.stdout, result.stdout + result.stderr
