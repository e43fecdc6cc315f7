"""Redis Streams brokers under failure: lost connections, a killed worker, a stuck
consumer, an unreachable server, oversized messages, missing replicas; and what the
streams hold (acknowledged entries deleted, unacknowledged ones kept)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scalepatterns.queue import (
    AsyncRedisStreamsBroker,
    ConnectionLost,
    DeadLetters,
    Message,
    Producer,
    PublishError,
    QueueSpec,
    RedisDedupStore,
    RedisStreamsBroker,
    Worker,
)
from scalepatterns.queue.broker import Delivery, Outgoing, Properties
from scalepatterns.queue.retry import RetryPolicy
from scalepatterns.queue.streams.keys import GROUP, QueueKeys
from scalepatterns.queue.testing import wait_until
from tests.support.servers import RedisServer

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    import redis

    prefix = f"sp_test_{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def admin(redis_url: str) -> Iterator[Any]:
    """A plain client for setup and checks (never killed)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _kill_clients(admin: Any, name: str) -> int:
    """CLIENT KILL every connection named `name`; how many."""
    ids = [c["id"] for c in admin.client_list() if c.get("name") == name]
    for client_id in ids:
        admin.execute_command("CLIENT", "KILL", "ID", client_id)
    return len(ids)


def test_ten_thousand_messages_survive_killed_connections_and_a_sigkilled_worker(
    redis_url: str, prefix: str, admin: Any
) -> None:
    """0 lost; with a dedup store, a message has its effect twice only if the killed
    worker held it (it did the effect, died before marking it done)."""
    queue, total = "jobs", 10_000
    effects, dedup_prefix = f"{prefix}effects", f"{prefix}dedup:"
    name = f"sp-victim-{uuid.uuid4().hex[:8]}"
    victim = RedisStreamsBroker(
        f"{redis_url}?client_name={name}", prefix=prefix, visibility_timeout=2.0
    )
    victim.declare_queue(QueueSpec(queue))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.streams_worker",
            redis_url,
            prefix,
            queue,
            dedup_prefix,
            effects,
        ],
        env=env,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    kills = 0
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"ready"
        producer = Producer(victim, reconnect_timeout=30)
        bodies = list(range(total))
        for start in range(0, total, 500):  # connections killed twice while publishing
            producer.publish_many(queue, bodies[start : start + 500])
            if start in (2000, 6000):
                kills += _kill_clients(admin, name) > 0
        wait_until(lambda: admin.llen(effects) >= 300, what="the other worker's first effects")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        keys = QueueKeys.of(prefix, queue)
        held: set[str] = set()
        for consumer in admin.xinfo_consumers(keys.stream(), GROUP):
            if consumer["pending"]:
                for entry in admin.xpending_range(
                    keys.stream(), GROUP, "-", "+", 1000, consumer["name"]
                ):
                    [(_, fields)] = admin.xrange(
                        keys.stream(), entry["message_id"], entry["message_id"]
                    )
                    held.add(fields[b"m"].split(b'"i":"')[1].split(b'"')[0].decode())
        assert held, "the killed worker held messages"

        local = RedisDedupStore(admin, prefix=dedup_prefix)

        def handle(message: Message) -> None:
            admin.rpush(effects, f"{message.id}:local")

        with Worker(victim, queue, handle, concurrency=8, dedup=local, in_progress_ttl=1.0):
            deadline = time.monotonic() + 60
            for effects_seen in (6000, 9000):  # and twice while consuming
                wait_until(lambda n=effects_seen: admin.llen(effects) >= n, timeout=60)
                kills += _kill_clients(admin, name) > 0
            while time.monotonic() < deadline:
                done = {e.rsplit(b":", 1)[0] for e in admin.lrange(effects, 0, -1)}
                if len(done) == total and victim.depth(queue) == 0:
                    break
                time.sleep(0.2)
        assert kills == 4
        ids = [e.rsplit(b":", 1)[0].decode() for e in admin.lrange(effects, 0, -1)]
        counts = Counter(ids)
        assert len(counts) == total  # 0 lost
        twice = {i for i, n in counts.items() if n > 1}
        assert twice <= held, "duplicate effects only for the killed worker's messages"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        victim.close()


def test_a_stuck_consumers_message_is_taken_over_after_the_visibility_timeout(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    with RedisStreamsBroker(redis_url, prefix=prefix, visibility_timeout=0.3) as broker:
        queue = "stuck"
        broker.declare_queue(QueueSpec(queue))
        broker.publish([Outgoing("", queue, b"x", Properties(message_id="m"))], timeout=10)
        first: list[Delivery] = []
        stuck = broker.consume(queue, prefetch=1, on_delivery=first.append)
        wait_until(lambda: first, what="the first delivery")
        assert not first[0].redelivered
        second: list[Delivery] = []
        other = broker.consume(queue, prefetch=1, on_delivery=second.append)
        wait_until(lambda: second, what="the message taken over")
        assert (second[0].properties.message_id, second[0].redelivered) == ("m", True)
        with caplog.at_level(logging.WARNING, logger="scalepatterns.queue.redis"):
            first[0].ack()  # far too late: the handler outlived the visibility timeout
        assert "later than the visibility_timeout" in caplog.text
        second[0].ack()
        stuck.close()
        other.close()
        assert broker.depth(queue) == 0


def test_acknowledged_entries_are_deleted_and_unacknowledged_ones_kept(
    redis_url: str, prefix: str, admin: Any
) -> None:
    """Nothing trims a stream: an entry leaves it only once acknowledged (or moved)."""
    with RedisStreamsBroker(redis_url, prefix=prefix) as broker:
        queue = "kept"
        Producer(broker).publish_many(queue, range(10))
        taken = [broker.get(queue) for _ in range(6)]
        for delivery in taken[:4]:
            assert delivery is not None
            delivery.ack()
        assert broker.depth(queue) == 4  # never delivered
        stream = QueueKeys.of(prefix, queue).stream()
        assert admin.xlen(stream) == 6  # 4 waiting + 2 delivered, unacknowledged
        assert admin.xpending(stream, GROUP)["pending"] == 2


def test_a_dead_letter_stream_entry_carries_the_error(
    redis_url: str, prefix: str, admin: Any
) -> None:
    with RedisStreamsBroker(redis_url, prefix=prefix) as broker:
        queue = "poison"

        def handler(message: Message) -> None:
            raise ValueError(f"cannot handle {message.body}")

        policy = RetryPolicy(attempts=2, wait=lambda attempt: 0.1)
        with Worker(broker, queue, handler, retry=policy):
            sent = time.monotonic()
            Producer(broker).publish(queue, 7)
            dead = DeadLetters(broker, queue)
            wait_until(lambda: dead.count() == 1, what="the dead letter")
            assert time.monotonic() - sent >= 0.1  # the retry waited its delay
        [(_, fields)] = admin.xrange(QueueKeys.of(prefix, f"{queue}.dead").stream())
        assert b'"x-sp-error-type":"ValueError"' in fields[b"m"]
        assert b'"x-sp-error-message":"cannot handle 7"' in fields[b"m"]
        [letter] = dead.inspect()
        assert (letter.body, letter.error_type, letter.attempts) == (7, "ValueError", 2)
        handled: list[Message] = []
        with Worker(broker, queue, handled.append):
            assert dead.redrive() == 1
            wait_until(lambda: handled, what="the re-driven message")
        assert (handled[0].body, handled[0].attempt) == (7, 1)
        assert dead.count() == 0


def test_a_message_above_the_size_limit_is_refused_and_the_others_stored(
    redis_url: str, prefix: str
) -> None:
    with RedisStreamsBroker(redis_url, prefix=prefix, max_message_size=1000) as broker:
        broker.declare_queue(QueueSpec("sized"))
        messages = [
            Outgoing("", "sized", b"small", Properties(message_id="small")),
            Outgoing("", "sized", b"x" * 1000, Properties(message_id="big")),
        ]
        with pytest.raises(PublishError) as caught:
            broker.publish(messages, timeout=10)
        assert list(caught.value.failed) == ["big"]
        assert "max_message_size=1000" in caught.value.failed["big"]
        assert caught.value.nacked == []  # not worth publishing again
        assert broker.depth("sized") == 1


def test_min_replicas_not_reached_reports_the_messages_nacked(
    redis_url: str, prefix: str, admin: Any
) -> None:
    if admin.info("replication")["connected_slaves"]:
        pytest.skip("the shared Redis has replicas")
    with RedisStreamsBroker(
        redis_url, prefix=prefix, min_replicas=1, replica_timeout=0.05
    ) as broker:
        broker.declare_queue(QueueSpec("replicated"))
        message = Outgoing("", "replicated", b"x", Properties(message_id="m"))
        with pytest.raises(PublishError) as caught:
            broker.publish([message], timeout=10)
        assert caught.value.nacked == ["m"]
        assert "0 of min_replicas=1" in caught.value.failed["m"]
        assert broker.depth("replicated") == 1  # stored on the primary all the same


def _silent_server() -> socket.socket:
    """A port that accepts connections (the kernel does) and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    return server


def test_a_server_that_does_not_answer_raises_connection_lost_after_the_timeout() -> None:
    server = _silent_server()
    url = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    try:
        with RedisStreamsBroker(url, timeout=0.3) as broker:
            message = Outgoing("", "q", b"x", Properties(message_id="m"))
            with pytest.raises(ConnectionLost) as caught:
                broker.publish([message], timeout=10)
            assert (caught.value.backend, caught.value.unconfirmed) == ("redis", ["m"])

        async def main() -> None:
            broker = AsyncRedisStreamsBroker(url, timeout=0.3)
            with pytest.raises(ConnectionLost):
                await broker.depth("q")
            await broker.close()

        asyncio.run(main())
    finally:
        server.close()


def test_a_refused_connection_raises_connection_lost() -> None:
    server = _silent_server()
    url = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    server.close()  # nothing listens there now
    with RedisStreamsBroker(url, timeout=0.3) as broker, pytest.raises(ConnectionLost):
        broker.declare_queue(QueueSpec("q"))


def test_a_restarted_server_gets_its_scripts_again(throwaway_redis: RedisServer) -> None:
    with RedisStreamsBroker(throwaway_redis.url) as broker:
        Producer(broker).publish("restarted", 1)
        throwaway_redis.kill()
        throwaway_redis.start()  # empty, and without the scripts
        received: list[Message] = []
        with Worker(broker, "restarted", received.append):
            Producer(broker, reconnect_timeout=10).publish("restarted", 2)
            wait_until(lambda: received, what="the message published after the restart")
        assert [m.body for m in received] == [2]


def test_a_closed_consumer_leaves_its_group(redis_url: str, prefix: str, admin: Any) -> None:
    """Workers that come and go leave no consumers behind (a killed one's name goes once
    it has held nothing for an hour)."""
    with RedisStreamsBroker(redis_url, prefix=prefix) as broker:
        handled: list[Message] = []
        for round_ in range(1, 4):
            with Worker(broker, "churn", handled.append):
                Producer(broker).publish("churn", 1)
                wait_until(lambda n=round_: len(handled) == n, what="a handled message")
        consumers = admin.xinfo_consumers(QueueKeys.of(prefix, "churn").stream(), GROUP)
        assert consumers == []
        assert len(handled) == 3
