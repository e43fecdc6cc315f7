"""The Redis Streams brokers' parts that need no server: key naming, the entry format,
settlements, consumer bookkeeping and the checks of their options."""

from __future__ import annotations

import math
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from scalepatterns.errors import ConfigurationError
from scalepatterns.queue import AsyncRedisStreamsBroker, RedisStreamsBroker
from scalepatterns.queue.broker import Delivery, Properties
from scalepatterns.queue.streams import scripts
from scalepatterns.queue.streams.consumer import (
    Consumer,
    ConsumerOptions,
    Settlements,
    StreamsDelivery,
)
from scalepatterns.queue.streams.envelope import entry_meta, read_entry
from scalepatterns.queue.streams.keys import QueueKeys, exchange_key


def _slot(key: str) -> int:
    return int(key_slot(key.encode()))


def test_a_queue_its_dead_letters_and_delay_set_share_one_slot() -> None:
    keys = QueueKeys.of("sp:queue:", "jobs")
    dead = keys.dead("sp:queue:")
    twice_dead = dead.dead("sp:queue:")
    all_keys = [keys.meta, keys.delayed, keys.bound, *keys.streams(3), dead.meta, dead.stream()]
    assert {_slot(k) for k in [*all_keys, twice_dead.stream()]} == {_slot("{jobs}")}
    assert keys.stream() == "sp:queue:{jobs}:s"
    assert keys.stream(2) == "sp:queue:{jobs}:s:2"
    assert dead.stream() == "sp:queue:{jobs}.dead:s"


def test_braces_in_names_are_escaped_so_names_never_collide_or_share_a_tag() -> None:
    odd = QueueKeys.of("p:", "a}{b%")
    assert odd.stream() == "p:{a%7D%7Bb%25}:s"
    assert QueueKeys.of("p:", "a%7Db").stream() != QueueKeys.of("p:", "a}b").stream()
    assert exchange_key("p:", "ev{x}") == "p:exchange:{ev%7Bx%7D}"


@pytest.mark.parametrize("prefix", ["", "{all}:", "a}", 3])
def test_a_prefix_that_would_pin_every_queue_to_one_slot_is_refused(prefix: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisStreamsBroker(redis.Redis(), prefix=prefix)
    assert caught.value.parameter == "prefix"


def test_an_entry_carries_every_property() -> None:
    properties = Properties(
        message_id="m1",
        type="user.created",
        content_type="application/json",
        timestamp=1_700_000_000,
        headers={"tenant": "a", "n": 3, "raw": b"\xffok"},
        priority=4,
        persistent=False,
    )
    meta = entry_meta(properties, "user.created")
    got, routing_key = read_entry(meta.encode(), "q")
    assert got == Properties(
        message_id="m1",
        type="user.created",
        content_type="application/json",
        timestamp=1_700_000_000,
        headers={"tenant": "a", "n": 3, "raw": "\ufffdok"},  # bytes travel as text
        priority=4,
        persistent=False,
    )
    assert routing_key == "user.created"


def test_an_entry_without_routing_key_is_routed_by_its_queue() -> None:
    meta = entry_meta(Properties(), None).encode()
    assert meta == b"{}"
    assert read_entry(meta, "jobs") == (Properties(), "jobs")
    assert read_entry(None, "jobs") == (Properties(), "jobs")  # a foreign producer's entry


def _delivery(settlements: Settlements, stream_level: int, entry_id: str) -> StreamsDelivery:
    keys = QueueKeys.of("p:", "q")
    return StreamsDelivery(
        settlements.add,
        keys,
        keys.stream(stream_level),
        entry_id,
        "c1",
        b"1",
        b"{}",
        False,
    )


def test_settlements_become_one_script_call_per_kind_and_stream() -> None:
    settlements = Settlements("p:")
    ids = [f"1-{i}" for i in range(1500)]
    for entry_id in ids:
        _delivery(settlements, 0, entry_id).ack()
    _delivery(settlements, 1, "2-0").reject(requeue=True)
    _delivery(settlements, 0, "3-0").reject(requeue=False)
    twice = _delivery(settlements, 0, "4-0")
    twice.ack()
    twice.reject(requeue=True)  # settled already: ignored
    calls = settlements.take()
    assert not settlements
    by_script = [(script.name, keys, args[:2], len(args)) for script, keys, args in calls]
    assert by_script == [
        ("ack", ["p:{q}:s"], ["sp", "1-0"], 1 + 1000),  # chunks of 1000 ids
        ("ack", ["p:{q}:s"], ["sp", "1-1000"], 1 + 501),
        ("give_back", ["p:{q}:s:1"], ["sp", "c1"], 3),
        ("dead", ["p:{q}:s", "p:{q}.dead:meta", "p:{q}.dead:s"], ["sp", "c1"], 3),
    ]
    settlements.retry(calls[2:])
    assert [c[0].name for c in settlements.take()] == ["give_back", "dead"]


class _Waker:
    def __init__(self) -> None:
        self.woken = 0

    def set(self) -> None:
        self.woken += 1

    def wait(self, timeout: float) -> None:
        return None


def test_a_consumer_settles_what_it_holds_once_and_gives_back_the_rest_on_close() -> None:
    settlements = Settlements("p:")
    delivered: list[Delivery] = []
    woken: list[int] = []
    options = ConsumerOptions(30.0, 0.5, 5.0, (ConnectionError,))
    waker = _Waker()
    consumer = Consumer(
        QueueKeys.of("p:", "q"),
        1,
        2,
        delivered.append,
        settlements,
        waker,
        options,
        lambda: woken.append(1),
    )
    meta = b'{"i":"a"}'
    consumer._deliver([b"0:0:1-0", b"1", meta, b"0:1:1-1", b"1", meta, b"0:1:1-0", b"1", meta])
    assert [(d.properties.message_id, d.redelivered) for d in delivered] == [
        ("a", False),
        ("a", True),
    ]  # 1-0 came back from a reclaim of our own: still held, not delivered twice
    assert consumer.held == 2
    delivered[0].ack()  # the loop is busy: its next fetch carries the ack, no wake-up
    assert (consumer.held, len(woken), waker.woken) == (1, 0, 0)
    taken = consumer.stop(close=True)
    assert [d.entry_id for d in taken] == ["1-1"]
    delivered[1].ack()  # given back on close: no longer ours to ack
    assert [c[0].name for c in settlements.take()] == ["ack"]
    consumer._deliver([b"0:0:1-2", b"1", meta])  # fetched while closing: given back
    assert [c[0].name for c in settlements.take()] == ["give_back"]
    assert len(delivered) == 2


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("visibility_timeout", 0),
        ("visibility_timeout", math.nan),
        ("timeout", math.inf),
        ("replica_timeout", -1),
        ("max_message_size", 0),
        ("max_message_size", 1.5),
        ("min_replicas", -1),
        ("min_replicas", True),
    ],
)
def test_bad_options_name_the_parameter(option: str, value: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisStreamsBroker(redis.Redis(), **{option: value})  # type: ignore[arg-type]
    assert caught.value.parameter == option


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "redis://host:port/0", "nonsense"])
def test_a_bad_url_names_the_parameter(url: str) -> None:
    for broker in (RedisStreamsBroker, AsyncRedisStreamsBroker):
        with pytest.raises(ConfigurationError) as caught:
            broker(url)
        assert caught.value.parameter == "client_or_url"


def test_a_client_of_the_wrong_kind_is_refused() -> None:
    import redis.asyncio

    with pytest.raises(ConfigurationError, match=r"redis\.Redis or"):
        RedisStreamsBroker(redis.asyncio.Redis())
    with pytest.raises(ConfigurationError, match=r"redis\.asyncio\.Redis or"):
        AsyncRedisStreamsBroker(redis.Redis())
    with pytest.raises(ConfigurationError, match="decode_responses=False"):
        RedisStreamsBroker(redis.Redis(decode_responses=True))


def test_the_broker_says_where_it_connects_without_a_password() -> None:
    from redis.sentinel import Sentinel

    assert RedisStreamsBroker("redis://:secret@db.example:6380/2").url == (
        "redis://db.example:6380/2"
    )
    managed = Sentinel([("127.0.0.1", 1)]).master_for("mymaster")
    assert RedisStreamsBroker(managed).url == "redis+sentinel://.../mymaster"


def test_scripts_are_named_by_their_sha1() -> None:
    import hashlib

    assert scripts.FETCH.sha == hashlib.sha1(scripts.FETCH.source.encode()).hexdigest()
    assert len({s.sha for s in (scripts.PUBLISH, scripts.FETCH, scripts.ACK, scripts.DEAD)}) == 4


def test_a_consumer_takes_only_its_own_settlements() -> None:
    settlements = Settlements("p:")
    keys = QueueKeys.of("p:", "q")
    for owner in ("mine", "getter"):
        StreamsDelivery(settlements.add, keys, keys.stream(), "1-0", owner, b"", None, False).ack()
    assert [c[2] for c in settlements.take("mine")] == [["sp", "1-0"]]
    assert settlements  # the getter's waits for the settler
    assert len(settlements.take()) == 1
