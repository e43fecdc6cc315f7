"""The outbox on the real PostgreSQL and RabbitMQ: NOTIFY wakes the relay; 10,000 writes
from 8 threads with rollbacks, broker cuts and a SIGKILLed relay lose nothing, publish
nothing for a rolled-back write, and keep each key's commit order."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from scalepatterns.outbox import AsyncOutboxRelay, Outbox, OutboxRelay
from scalepatterns.queue import (
    AsyncProducer,
    AsyncRabbitMQBroker,
    MemoryDedupStore,
    Message,
    Producer,
    QueueSpec,
    RabbitMQBroker,
    Worker,
)
from scalepatterns.queue.testing import until, wait_until
from tests.support.servers import TcpProxy

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def tables(postgres_url: str) -> Iterator[tuple[sa.Engine, Outbox, sa.Table]]:
    """A fresh outbox and a per-key counter table, dropped afterwards."""
    suffix = uuid.uuid4().hex[:10]
    outbox = Outbox(name=f"sp_outbox_{suffix}")
    counters = sa.Table(
        f"sp_counters_{suffix}",
        outbox.metadata,
        sa.Column("key", sa.String(20), primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
    )
    engine = sa.create_engine(postgres_url, pool_size=12)
    outbox.metadata.create_all(engine)
    try:
        yield engine, outbox, counters
    finally:
        outbox.metadata.drop_all(engine)
        engine.dispose()


def test_notify_wakes_the_relays_before_their_poll(
    tables: tuple[sa.Engine, Outbox, sa.Table], amqp_url: str, admin: RabbitMQBroker, names
) -> None:
    engine, outbox, _ = tables
    queue = names.queue()
    admin.declare_queue(QueueSpec(queue))
    with OutboxRelay(outbox, engine, Producer(admin), poll_interval=60):
        time.sleep(0.3)  # the relay drained the empty outbox and now LISTENs
        with Session(engine) as session, session.begin():
            outbox.add(session, queue, {"n": 1})
        wait_until(lambda: admin.depth(queue) == 1, timeout=10, what="the notified relay")

    async def main() -> None:
        from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

        async_engine = create_async_engine(engine.url)
        async with AsyncRabbitMQBroker(amqp_url) as broker:
            relay = AsyncOutboxRelay(outbox, async_engine, AsyncProducer(broker), poll_interval=60)
            async with relay:
                await asyncio.sleep(0.3)
                async with AsyncSession(async_engine) as session, session.begin():
                    await outbox.aadd(session, queue, {"n": 2})
                await until(lambda: _is(broker.depth(queue), 2), timeout=10)
        await async_engine.dispose()

    asyncio.run(main())
    assert admin.depth(queue) == 2  # not after the 60 s poll: NOTIFY woke both relays


RELAY = """
import signal, sys
import sqlalchemy as sa
from scalepatterns.outbox import Outbox, OutboxRelay
from scalepatterns.queue import Producer, RabbitMQBroker

postgres_url, amqp_url, name = sys.argv[1:4]
engine = sa.create_engine(postgres_url)
broker = RabbitMQBroker(amqp_url, reconnect_max_delay=0.5)
relay = OutboxRelay(Outbox(name=name), engine, Producer(broker, reconnect_timeout=60),
                    batch_size=200, poll_interval=0.2, max_backoff=0.5)
signal.signal(signal.SIGTERM, lambda *_: relay.stop(0))
relay.run()
broker.close()
"""


@pytest.mark.slow
@pytest.mark.parametrize("relays", [1, 2])
def test_10k_writes_with_rollbacks_cuts_and_a_killed_relay(
    tables: tuple[sa.Engine, Outbox, sa.Table],
    postgres_url: str,
    amqp_url: str,
    admin: RabbitMQBroker,
    names,
    relays: int,
    tmp_path: Path,
) -> None:
    engine, outbox, counters = tables
    queue = names.queue()
    admin.declare_queue(QueueSpec(queue))
    keys = [f"k{i}" for i in range(40)]
    with engine.begin() as conn:
        conn.execute(sa.insert(counters), [{"key": k, "n": 0} for k in keys])
    handled: dict[str, list[int]] = defaultdict(list)

    def handler(message: Message) -> None:  # one at a time: arrival order is kept
        handled[message.body["key"]].append(message.body["n"])

    writes, rollbacks = 10_000, 0
    lock = threading.Lock()

    def write(count: int, seed: int) -> None:
        nonlocal rollbacks
        rng = random.Random(seed)
        for _ in range(count):
            key = rng.choice(keys)
            with Session(engine) as session:
                n = session.execute(
                    sa.update(counters)
                    .where(counters.c.key == key)
                    .values(n=counters.c.n + 1)
                    .returning(counters.c.n)
                ).scalar_one()
                outbox.add(session, queue, {"key": key, "n": n}, key=key)
                if rng.random() < 0.1:  # its counter step and its event vanish together
                    session.rollback()
                    with lock:
                        rollbacks += 1
                else:
                    session.commit()

    proxy = TcpProxy(5672)
    url = amqp_url.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    logs: list[Path] = []

    def spawn() -> subprocess.Popen[bytes]:
        logs.append(tmp_path / f"relay{len(logs)}.log")
        with open(logs[-1], "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-c", RELAY, postgres_url, url, outbox.name],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def total() -> int:
        return sum(len(ns) for ns in handled.values())

    worker = Worker(admin, queue, handler, concurrency=1, dedup=MemoryDedupStore())
    processes = [spawn() for _ in range(relays)]
    writers = [threading.Thread(target=write, args=(writes // 8, seed)) for seed in range(8)]
    try:
        with worker:
            for thread in writers:
                thread.start()
            wait_until(lambda: total() >= 2000, timeout=120, what="2,000 events")
            proxy.cut()
            wait_until(lambda: total() >= 3500, timeout=120, what="3,500 events")
            processes[0].send_signal(signal.SIGKILL)  # mid-batch: its rows go out again
            processes[0].wait(timeout=10)
            processes[0] = spawn()
            wait_until(lambda: total() >= 5000, timeout=120, what="5,000 events")
            proxy.cut()
            for thread in writers:
                thread.join(timeout=300)
            with engine.connect() as conn:
                committed = conn.execute(sa.select(sa.func.sum(counters.c.n))).scalar_one()
            wait_until(lambda: total() >= committed, timeout=120, what="every committed event")
            time.sleep(0.5)  # a late copy would show up now
            cuts = proxy.cuts
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        proxy.close()
    with engine.connect() as conn:
        final = dict(conn.execute(sa.select(counters.c.key, counters.c.n)).all())
        left = conn.execute(sa.select(sa.func.count()).select_from(outbox.table)).scalar_one()
    assert rollbacks > 500
    assert committed == writes - rollbacks
    for key in keys:  # every committed write's event once, in commit order; none rolled back
        assert handled[key] == list(range(1, final[key] + 1)), key
    assert left == 0
    assert cuts == 2
    assert [p.returncode for p in processes] == [0] * relays, [log.read_text() for log in logs]


async def _is(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]
