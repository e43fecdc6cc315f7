"""Outbox: relay throughput, commit-to-publish latency, and what `add` costs a write.

On the real PostgreSQL and RabbitMQ, in one run:

- relay throughput: rows relayed (claimed, published with confirms, deleted) per second,
  against `Producer.publish_many` of the same messages (the floor a relay stands on);
- commit-to-publish latency at low load (one write every 20 ms), the relay woken by
  ``LISTEN/NOTIFY`` against the same relay polling every 50 ms;
- the writer's transaction (insert a row, commit) with and without `Outbox.add`, in
  alternating rounds.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from benchmarks.harness import Bench
from scalepatterns.outbox import Outbox, OutboxRelay
from scalepatterns.queue import Message, Producer, QueueSpec, RabbitMQBroker, Worker

POSTGRES_URL = os.environ.get(
    "SCALEPATTERNS_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
AMQP_URL = os.environ.get("SCALEPATTERNS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
BODY = {"user": 1, "email": "ada@example.com", "pad": "x" * 60}


def run(bench: Bench) -> None:
    try:
        engine = sa.create_engine(POSTGRES_URL, pool_size=4)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        broker = RabbitMQBroker(AMQP_URL, connect_timeout=3)
        broker.depth("sp_bench_probe")
    except Exception as exc:
        bench.skip(f"PostgreSQL or RabbitMQ not reachable: {exc}")

    suffix = uuid.uuid4().hex[:8]
    outbox = Outbox(name=f"sp_bench_outbox_{suffix}")
    writes = sa.Table(
        f"sp_bench_writes_{suffix}",
        outbox.metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("note", sa.String(50)),
    )
    outbox.metadata.create_all(engine)
    queue = f"sp_bench_outbox_{suffix}"
    broker.declare_queue(QueueSpec(queue))
    producer = Producer(broker)
    try:
        _throughput(bench, engine, outbox, producer, queue)
        _latency(bench, engine, outbox, producer, queue)
        _add_cost(bench, engine, outbox, writes, queue)
    finally:
        outbox.metadata.drop_all(engine)
        broker.delete_queue(queue)
        broker.delete_queue(f"{queue}.dead")
        broker.close()
        engine.dispose()


def _throughput(
    bench: Bench, engine: sa.Engine, outbox: Outbox, producer: Producer, queue: str
) -> None:
    count = bench.scale(5000, 500)
    relay = OutboxRelay(outbox, engine, producer)

    def fill() -> None:
        with Session(engine) as session, session.begin():
            for _ in range(count):
                outbox.add(session, queue, BODY)

    relayed, floor = [], []
    for _ in range(bench.scale(5, 2)):
        fill()
        start = time.perf_counter()
        assert relay.drain() == count
        relayed.append(count / (time.perf_counter() - start))
        start = time.perf_counter()
        producer.publish_many(queue, [BODY] * count)
        floor.append(count / (time.perf_counter() - start))
        producer.broker.delete_queue(queue)  # keep the broker's memory flat
        producer.broker.declare_queue(QueueSpec(queue))
    ratios = [r / f for r, f in zip(relayed, floor, strict=True)]
    bench.record(
        f"relay throughput ({count} rows per round, batches of 500)",
        {
            "relay (rows/s, median)": round(statistics.median(relayed)),
            "Producer.publish_many (msg/s, median)": round(statistics.median(floor)),
            "relay / publish_many": f"{statistics.median(ratios):.2f}x "
            f"({min(ratios):.2f}..{max(ratios):.2f})",
        },
        target="relay >= 0.5x confirmed publish_many of the same messages",
        note="The relay claims each batch with SELECT ... FOR UPDATE SKIP LOCKED, publishes "
        "it with pipelined confirms and deletes it in the same transaction.",
    )


def _latencies(
    engine: sa.Engine,
    outbox: Outbox,
    producer: Producer,
    queue: str,
    samples: int,
    options: dict[str, Any],
) -> list[float]:
    """Commit -> handler start, in ms, for writes one every 20 ms."""
    arrived: dict[str, float] = {}
    committed: dict[str, float] = {}
    lock = threading.Lock()

    def handler(message: Message) -> None:
        with lock:
            arrived[message.id] = time.perf_counter()

    relay = OutboxRelay(outbox, engine, producer, **options)
    with Worker(producer.broker, queue, handler, concurrency=1), relay:
        time.sleep(0.3)
        for _ in range(samples):
            with Session(engine) as session:
                message_id = outbox.add(session, queue, BODY)
                session.commit()
            committed[message_id] = time.perf_counter()
            time.sleep(0.02)
        deadline = time.monotonic() + 30
        while len(arrived) < samples and time.monotonic() < deadline:
            time.sleep(0.01)
    return sorted((arrived[i] - committed[i]) * 1000 for i in committed if i in arrived)


def _latency(
    bench: Bench, engine: sa.Engine, outbox: Outbox, producer: Producer, queue: str
) -> None:
    samples = bench.scale(200, 30)
    results = {
        mode: _latencies(engine, outbox, producer, queue, samples, options)
        for mode, options in (
            ("LISTEN/NOTIFY", {"poll_interval": 5.0}),
            ("polling every 50 ms", {"poll_interval": 0.05, "listen": False}),
        )
    }
    values: dict[str, object] = {}
    for mode, latencies in results.items():
        values[f"{mode}: p50 (ms)"] = round(latencies[len(latencies) // 2], 2)
        values[f"{mode}: p99 (ms)"] = round(latencies[int(len(latencies) * 0.99)], 2)
    bench.record(
        f"commit -> handler latency at low load ({samples} writes, one every 20 ms)",
        values,
        target="p99 under 20 ms with NOTIFY",
        note="From the writer's commit to the start of a Worker's handler: NOTIFY wakes "
        "the relay, which claims, publishes (confirmed) and deletes the row.",
    )


def _add_cost(
    bench: Bench, engine: sa.Engine, outbox: Outbox, writes: sa.Table, queue: str
) -> None:
    def bare() -> None:
        with Session(engine) as session:
            session.execute(sa.insert(writes).values(note="w"))
            session.commit()

    def with_event() -> None:
        with Session(engine) as session:
            session.execute(sa.insert(writes).values(note="w"))
            outbox.add(session, queue, BODY, key="user:1")
            session.commit()

    bench.compare(
        "the writer's transaction: insert + commit, with and without Outbox.add",
        {"insert + Outbox.add (keyed) + commit": with_event, "insert + commit": bare},
        baseline="insert + commit",
        number=50,
        rounds=9,
        note="Outbox.add with a key takes the key's advisory lock, inserts the row and "
        "NOTIFYs: three statements in the same transaction.",
    )
