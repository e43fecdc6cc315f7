"""The async queue on a real RabbitMQ: cuts, a killed worker process, refusals, and one wire
format shared with the sync API, raw pika and aio-pika."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from scalepatterns.queue import (
    AsyncProducer,
    AsyncRabbitMQBroker,
    AsyncWorker,
    BrokerRefused,
    ConnectionLost,
    Message,
    Producer,
    RabbitMQBroker,
    Worker,
)
from scalepatterns.queue.testing import Names, until, wait_until
from tests.support.servers import TcpProxy, free_port

pytestmark = pytest.mark.rabbitmq

ROOT = Path(__file__).resolve().parents[3]


def proxied(amqp_url: str, proxy: TcpProxy) -> str:
    return amqp_url.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with TcpProxy(5672) as proxy:
        yield proxy


ASYNC_WORKER = """
import asyncio, sys
import redis.asyncio as aredis
from scalepatterns.queue import AsyncRabbitMQBroker, AsyncWorker, RedisDedupStore

url, queue, redis_url, prefix = sys.argv[1:5]

async def main():
    client = aredis.Redis.from_url(redis_url)
    store = RedisDedupStore(client, prefix=prefix + ":dedup:")

    async def handler(message):
        await asyncio.sleep(0.002)
        await client.rpush(prefix + ":effects", message.body["key"])

    broker = AsyncRabbitMQBroker(url, reconnect_max_delay=0.5)
    worker = AsyncWorker(broker, queue, handler, concurrency=4, prefetch=50, dedup=store,
                         in_progress_ttl=1.0)
    await worker.run()
    await broker.close()
    await client.aclose()

asyncio.run(main())
"""


@pytest.mark.slow
def test_10k_messages_through_cuts_and_a_killed_async_worker_lose_nothing(
    amqp_url: str,
    redis_url: str,
    proxy: TcpProxy,
    admin: RabbitMQBroker,
    names: Names,
    tmp_path: Path,
) -> None:
    """An AsyncProducer publishes 10,000 messages through a proxy cut 4 times mid-publish;
    two async worker processes consume them, and one is SIGKILLed mid-run. Nothing is
    lost; the dedup store lets an effect happen twice only for a message the killed
    worker was handling (its effect written, its done mark not yet)."""
    import redis

    queue = names.queue()
    prefix = names.prefix
    client = redis.Redis.from_url(redis_url)
    total, prefetch = 10_000, 50
    url = proxied(amqp_url, proxy)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    logs: list[Path] = []

    def spawn() -> subprocess.Popen[bytes]:
        logs.append(tmp_path / f"worker{len(logs)}.log")
        with open(logs[-1], "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-c", ASYNC_WORKER, url, queue, redis_url, prefix],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def effects() -> int:
        return int(client.llen(prefix + ":effects"))

    admin.declare_queue(Worker(admin, queue, print).spec)
    workers = [spawn(), spawn()]

    async def produce() -> int:
        loop = asyncio.get_running_loop()
        async with AsyncRabbitMQBroker(url, reconnect_max_delay=0.5) as broker:
            producer = AsyncProducer(broker, reconnect_timeout=60)
            for start in range(0, total, 500):
                if start // 500 in (2, 6, 10, 14):
                    loop.call_later(0.005, proxy.cut)  # while this batch is in flight
                await producer.publish_many(
                    queue, [{"key": f"k{i}"} for i in range(start, start + 500)]
                )
            return broker.connections

    try:
        connections = asyncio.run(produce())
        wait_until(lambda: effects() >= 6000, timeout=60, what="6,000 effects")
        at_kill = effects()
        workers[0].send_signal(signal.SIGKILL)  # mid-handler, unacked messages in flight
        workers[0].wait(timeout=10)
        workers[0] = spawn()
        wait_until(lambda: effects() >= total, timeout=120, what="all effects")
        wait_until(lambda: admin.depth(queue) == 0, timeout=30, what="an empty queue")
        time.sleep(1.5)  # in-progress marks of the killed handlers expire; late copies settle
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        keys = [k.decode() for k in client.lrange(prefix + ":effects", 0, -1)]
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()
    assert proxy.cuts == 4
    assert connections == 5  # the producer reconnected after each cut
    assert at_kill < total  # the kill came mid-run
    assert set(keys) == {f"k{i}" for i in range(total)}  # none lost
    duplicates = sum(count - 1 for count in Counter(keys).values())
    assert duplicates <= prefetch, "only the killed worker's in-flight messages ran twice"
    assert admin.depth(f"{queue}.dead") == 0
    assert [p.returncode for p in workers] == [0, 0], [log.read_text() for log in logs]


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    ("credentials", "reason"),
    [("guest:wrong@", "403 ACCESS_REFUSED"), ("guest:guest@", "530 NOT_ALLOWED")],
    ids=["wrong-password", "missing-vhost"],
)
def test_a_refused_connection_fails_at_once_and_is_never_retried(
    proxy: TcpProxy, kind: str, credentials: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    vhost = "%2F" if reason.startswith("403") else "no_such_vhost"
    url = f"amqp://{credentials}127.0.0.1:{proxy.port}/{vhost}"
    errors: list[BrokerRefused] = []
    if kind == "sync":
        broker = RabbitMQBroker(url, connect_timeout=5)
        for _ in range(2):
            with pytest.raises(BrokerRefused) as caught:
                Producer(broker).publish("q", 1)
            errors.append(caught.value)
        time.sleep(1.0)  # a retrying broker would have reconnected several times by now
        broker.close()
    else:

        async def twice() -> None:
            async with AsyncRabbitMQBroker(url, connect_timeout=5) as broker:
                for _ in range(2):
                    with pytest.raises(BrokerRefused) as caught:
                        await AsyncProducer(broker).publish("q", 1)
                    errors.append(caught.value)
                await asyncio.sleep(1.0)

        asyncio.run(twice())
    assert proxy.connections_accepted == 1  # one try, never again
    assert all(reason in error.reason for error in errors)
    assert errors[0].parameter == "url"
    assert "wrong" not in str(errors[0])  # the password never shows
    assert not [r for r in caplog.records if "cannot connect" in r.getMessage()]


def test_an_unreachable_broker_raises_after_connect_timeout_without_stalling_the_loop() -> None:
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    ticks = [0]

    async def main() -> None:
        async def tick() -> None:
            while True:
                await asyncio.sleep(0.01)
                ticks[0] += 1

        ticker = asyncio.ensure_future(tick())
        async with AsyncRabbitMQBroker(url, connect_timeout=0.5) as broker:
            with pytest.raises(ConnectionLost) as caught:
                await AsyncProducer(broker).publish("q", 1)
        ticker.cancel()
        assert "Connection refused" in str(caught.value)

    asyncio.run(main())
    assert ticks[0] >= 10  # the loop ran other tasks while the broker waited


def test_sync_and_async_share_one_wire_format(amqp_url: str, names: Names) -> None:
    """Published by the sync Producer, handled by the AsyncWorker, and the other way round:
    the same body, id, type, headers and attempt."""
    to_async, to_sync = names.queue("to_async"), names.queue("to_sync")
    with RabbitMQBroker(amqp_url) as sync_broker:
        sent = Producer(sync_broker).publish(
            to_async, {"n": 1}, type="job", headers={"tenant": "a"}
        )

        async def async_side() -> str:
            seen: list[Message] = []

            async def handle(message: Message) -> None:
                seen.append(message)

            async with AsyncRabbitMQBroker(amqp_url) as broker:
                async with AsyncWorker(broker, to_async, handle):
                    await until(lambda: seen)
                received = seen[0]
                assert (received.id, received.body, received.type) == (sent, {"n": 1}, "job")
                assert (received.headers, received.attempt) == ({"tenant": "a"}, 1)
                return await AsyncProducer(broker).publish(
                    to_sync, {"n": 2}, type="job", headers={"tenant": "b"}
                )

        back = asyncio.run(async_side())
        seen: list[Message] = []
        with Worker(sync_broker, to_sync, seen.append):
            wait_until(lambda: seen)
    assert (seen[0].id, seen[0].body, seen[0].type) == (back, {"n": 2}, "job")
    assert (seen[0].headers, seen[0].attempt) == ({"tenant": "b"}, 1)


def test_raw_pika_and_aio_pika_read_and_write_the_async_queue(
    amqp_url: str, admin: RabbitMQBroker, names: Names
) -> None:
    import aio_pika
    import pika

    queue = names.queue()
    admin.declare_queue(Worker(admin, queue, print).spec)

    async def main() -> None:
        async with AsyncRabbitMQBroker(amqp_url) as broker:
            producer = AsyncProducer(broker)
            ours = [await producer.publish(queue, {"to": "pika"}, type="greeting")]
            ours.append(await producer.publish(queue, {"to": "aio-pika"}, type="greeting"))

            connection = await aio_pika.connect(amqp_url.replace("%2F", ""))
            async with connection:
                channel = await connection.channel()
                foreign = await channel.get_queue(queue, ensure=False)
                # aio-pika reads ours (the second one: raw pika takes the first below)
                incoming = await foreign.get(timeout=5)
                assert incoming is not None
                # aio-pika publishes as its tutorials do: JSON body, no id, no headers
                await channel.default_exchange.publish(
                    aio_pika.Message(body=b'{"from": "aio-pika"}'), routing_key=queue
                )
                seen: list[Message] = []

                async def handle(message: Message) -> None:
                    seen.append(message)

                raw = pika.BlockingConnection(pika.URLParameters(amqp_url))
                method, properties, body = raw.channel().basic_get(queue, auto_ack=True)
                raw.close()
                assert method is not None
                first = json.loads(incoming.body)
                await incoming.ack()
                assert {first["to"], json.loads(body)["to"]} == {"pika", "aio-pika"}
                assert properties.message_id in ours
                assert properties.headers["x-sp-attempt"] == 1
                assert incoming.message_id in ours
                assert incoming.type == "greeting"
                async with AsyncWorker(broker, queue, handle):
                    await until(lambda: seen)
            assert seen[0].body == {"from": "aio-pika"}
            assert (seen[0].type, seen[0].headers, seen[0].attempt) == (None, {}, 1)

    asyncio.run(main())


def test_a_dropped_broker_stops_reconnecting(caplog: pytest.LogCaptureFixture) -> None:
    """A sync broker that was never closed stops its I/O thread when it is dropped."""
    import gc

    caplog.set_level(logging.WARNING, logger="scalepatterns.queue.rabbitmq")
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    broker = RabbitMQBroker(url, connect_timeout=0.2, reconnect_max_delay=0.05)
    with pytest.raises(ConnectionLost):
        broker.depth("q")
    del broker
    gc.collect()
    wait_until(
        lambda: not any(t.name == "sp-rabbitmq-io" for t in threading.enumerate()),
        timeout=10,
        what="the I/O thread to stop",
    )
    caplog.clear()
    time.sleep(0.3)
    assert not [r for r in caplog.records if "cannot connect" in r.getMessage()]


@pytest.mark.parametrize("form", ["list", "commas", "hosts"])
def test_a_broker_moves_to_the_next_node_when_one_is_down(amqp_url: str, form: str) -> None:
    """The first node refuses connections; the broker connects to the second, in each
    form of giving several nodes."""
    dead = free_port()
    live = amqp_url.replace("amqp://guest:guest@", "")
    urls = {
        "list": [f"amqp://guest:guest@127.0.0.1:{dead}/%2F", amqp_url],
        "commas": f"amqp://guest:guest@127.0.0.1:{dead}/%2F, {amqp_url}",
        "hosts": f"amqp://guest:guest@127.0.0.1:{dead},{live}",
    }[form]
    with RabbitMQBroker(urls, reconnect_max_delay=0.2) as broker:
        assert broker.depth(f"sp_test_missing_{form}") == 0  # answered by the live node
        assert broker.connections == 1
        assert str(dead) in broker.url  # every node is named
