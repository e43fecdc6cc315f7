"""The pure core of the queue block: topics, delay tiers, retry decisions, the envelope."""

from __future__ import annotations

import math
import re

import pytest
import tenacity
from hypothesis import given
from hypothesis import strategies as st

from scalepatterns import ConfigurationError, FakeClock, JsonSerializer, SerializationError
from scalepatterns.queue import QueueSpec, Reject, RetryPolicy, exponential_backoff, topic_matches
from scalepatterns.queue.broker import Properties, delay_tier_ms
from scalepatterns.queue.message import ATTEMPT_HEADER, decode, encode
from scalepatterns.queue.retry import DeadLetter, Retry

words = st.lists(st.sampled_from(["a", "b", "user", "x1"]), min_size=0, max_size=5)
pattern_words = st.lists(st.sampled_from(["a", "b", "user", "*", "#"]), min_size=1, max_size=5)


def reference_match(pattern: str, key: str) -> bool:
    """RabbitMQ's topic semantics as a regular expression over ".w1.w2..." strings."""
    token = {"*": r"\.[^.]*", "#": r"(?:\.[^.]*)*"}
    regex = "".join(token.get(word, r"\." + re.escape(word)) for word in pattern.split("."))
    return re.fullmatch(regex, "." + key) is not None


@given(pattern_words, words)
def test_topic_matches_like_rabbitmq(pattern: list[str], key: list[str]) -> None:
    if not key:
        return  # RabbitMQ routing keys of zero words are the empty string; skipped here
    p, k = ".".join(pattern), ".".join(key)
    assert topic_matches(p, k) == reference_match(p, k), (p, k)


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("user.*", "user.signed_up", True),
        ("user.*", "user", False),
        ("user.*", "user.a.b", False),
        ("user.#", "user", True),
        ("user.#", "user.a.b", True),
        ("#", "anything.at.all", True),
        ("*.paid", "order.paid", True),
        ("#.paid", "a.b.paid", True),
        ("a.*.c", "a.b.c", True),
    ],
)
def test_topic_examples(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


@given(st.floats(min_value=0.0005, max_value=10_000))
def test_delay_tiers_are_close_and_few(seconds: float) -> None:
    tier = delay_tier_ms(seconds)
    ms = max(1, round(seconds * 1000))
    assert tier >= 1
    assert abs(tier - ms) <= max(0.05 * ms, 1)
    assert len(str(tier).rstrip("0")) <= 2  # two significant digits


def test_delay_tier_examples() -> None:
    assert [delay_tier_ms(s) for s in (0.0001, 0.05, 0.137, 2.345, 61.0)] == [
        1,
        50,
        140,
        2300,
        61000,
    ]


def test_retry_policy_decisions() -> None:
    policy = RetryPolicy(attempts=3, wait=lambda attempt: 0.5 * attempt, on=(OSError,))
    assert policy.decide(1, TimeoutError()) == Retry(0.5)
    assert policy.decide(2, ConnectionError()) == Retry(1.0)
    assert policy.decide(3, OSError()) == DeadLetter("gave up after 3 attempts")
    assert policy.decide(1, KeyError("x")) == DeadLetter("KeyError is not retried")
    assert isinstance(policy.decide(1, Reject("no")), DeadLetter)


def test_retry_policy_accepts_tenacity_waits() -> None:
    policy = RetryPolicy(wait=tenacity.wait_exponential(multiplier=1, max=30))
    delays = [policy.decide(n, RuntimeError()) for n in (1, 2, 3, 4)]
    assert [d.delay for d in delays if isinstance(d, Retry)] == [1, 2, 4, 8]


@pytest.mark.parametrize("bad", [math.inf, math.nan, None, "1s"])
def test_a_wait_that_gives_no_number_of_seconds_dead_letters(bad: object) -> None:
    policy = RetryPolicy(attempts=5, wait=lambda attempt: bad)
    decision = policy.decide(1, TimeoutError())
    assert isinstance(decision, DeadLetter)
    assert "wait(1)" in decision.reason


@given(st.integers(min_value=1, max_value=30))
def test_exponential_backoff_bounds(attempt: int) -> None:
    wait = exponential_backoff(initial=0.1, maximum=5, multiplier=2, jitter=0.5)
    delay = wait(attempt)
    base = min(5.0, 0.1 * 2 ** (attempt - 1))
    assert base <= delay <= base + 0.5


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"attempts": 0}, "attempts"),
        ({"wait": 3}, "wait"),
        ({"on": [ValueError]}, "on"),  # a list: isinstance() fails on each error
    ],
)
def test_bad_retry_configuration(kwargs: dict[str, object], parameter: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert caught.value.parameter == parameter


def test_bad_queue_specs() -> None:
    with pytest.raises(ConfigurationError):
        QueueSpec("")
    with pytest.raises(ConfigurationError, match="bytes"):
        QueueSpec("é" * 101)  # 101 characters, 202 bytes: RabbitMQ would drop the connection
    assert QueueSpec("é" * 100).name  # 200 bytes
    with pytest.raises(ConfigurationError):
        QueueSpec("q", queue_type="stream")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        QueueSpec("q", queue_type="quorum", max_priority=3)
    assert QueueSpec("q", max_priority=3).arguments()["x-max-priority"] == 3


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(json_values, st.dictionaries(st.sampled_from(["a", "b", "tenant"]), st.text(), max_size=2))
def test_envelope_round_trip(body: object, headers: dict[str, str]) -> None:
    clock = FakeClock(wall_start=1_700_000_000.25)
    data, props = encode(body, JsonSerializer(), clock, type="t", headers=headers)
    message = decode(data, props, JsonSerializer(), routing_key="rk")
    assert (message.body, message.type, dict(message.headers)) == (body, "t", headers)
    assert message.id == props.message_id
    assert message.has_id
    assert message.attempt == 1
    assert message.created_at == 1_700_000_000.25
    assert message.routing_key == "rk"


def test_foreign_messages_decode() -> None:
    serializer = JsonSerializer()
    plain = decode(b"Hello World!", Properties(), serializer)
    assert plain.body == b"Hello World!"
    assert not plain.has_id
    assert plain.attempt == 1
    as_json = decode(b'{"a":1}', Properties(headers={ATTEMPT_HEADER: b"x"}), serializer)
    assert as_json.body == {"a": 1}
    assert as_json.attempt == 1
    text = decode(b"hi", Properties(content_type="text/plain"), serializer)
    assert text.body == b"hi"
    with pytest.raises(SerializationError):
        decode(b"{", Properties(content_type="application/json"), serializer)
    with pytest.raises(SerializationError):
        decode(b"\x00", Properties(content_type="application/x-protobuf"), serializer)


def test_the_current_opentelemetry_span_travels_in_the_envelope() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("signup") as span:
        data, props = encode({"a": 1}, JsonSerializer(), FakeClock())
    message = decode(data, props, JsonSerializer())
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert trace_id in message.trace["traceparent"]
    assert "traceparent" not in message.headers
    # a caller's own traceparent wins
    _, props = encode(1, JsonSerializer(), FakeClock(), headers={"traceparent": "00-x-y-01"})
    assert props.headers["traceparent"] == "00-x-y-01"


def test_node_urls_accept_every_form_of_several_nodes() -> None:
    from scalepatterns.queue.rabbitmq.settings import node_urls

    one = "amqp://u:p@h1:5672/v"
    assert node_urls(one) == [one]
    assert node_urls([one, "amqps://u:p@h2:5671/v"]) == [one, "amqps://u:p@h2:5671/v"]
    assert node_urls("amqp://u:p@h1:5672/v, amqp://u:p@h2:5673/v") == [
        one,
        "amqp://u:p@h2:5673/v",
    ]
    assert node_urls("amqp://u:p@h1:5672/v;amqp://u:p@h2:5673/v")[1] == "amqp://u:p@h2:5673/v"
    assert node_urls("amqp://u:p@h1:5672,h2:5673/v?heartbeat=5") == [
        "amqp://u:p@h1:5672/v?heartbeat=5",
        "amqp://u:p@h2:5673/v?heartbeat=5",
    ]


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "notaurl", "amqp://u:p@h1,,h2/v", [], [1]]
)
def test_a_url_that_is_not_amqp_is_refused_naming_the_parameter(url: object) -> None:
    from scalepatterns.queue.rabbitmq.settings import BrokerSettings

    with pytest.raises(ConfigurationError) as caught:
        BrokerSettings(url)  # type: ignore[arg-type]
    assert caught.value.parameter == "url"
    assert "amqp://" in str(caught.value)


def test_broker_settings_refuse_durations_that_are_not_finite() -> None:
    from scalepatterns.queue.rabbitmq.settings import BrokerSettings

    for name in ("connect_timeout", "blocked_timeout", "reconnect_max_delay"):
        with pytest.raises(ConfigurationError) as caught:
            BrokerSettings(**{name: float("nan")})
        assert caught.value.parameter == name
