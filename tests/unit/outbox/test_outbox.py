"""The outbox on SQLite (polling) and the in-memory broker: atomic with the write,
per-key order, refusals moved aside, broker outages kept, sync and async."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from scalepatterns.events import EventRecorder, Listeners
from scalepatterns.outbox import (
    AsyncOutboxRelay,
    Outbox,
    OutboxError,
    OutboxRelay,
    OutboxRelayed,
    OutboxRelayFailed,
    OutboxRowsRefused,
)
from scalepatterns.queue import (
    AsyncMemoryBroker,
    AsyncProducer,
    ConnectionLost,
    EventBus,
    MemoryBroker,
    Message,
    Producer,
    QueueSpec,
)
from scalepatterns.queue.broker import Outgoing
from scalepatterns.queue.testing import until, wait_until
from tests.support.models import Base, Order, tables

ORDERS = Order.__table__


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    Base.metadata.create_all(engine, tables=tables(Order))
    yield engine
    engine.dispose()


@pytest.fixture
def outbox(engine: sa.Engine) -> Outbox:
    outbox = Outbox()
    outbox.metadata.create_all(engine)
    return outbox


def rows(engine: sa.Engine, table: sa.Table) -> list[sa.Row[tuple[object, ...]]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(table).order_by(table.c.seq)))


def drain_queue(broker: MemoryBroker, queue: str) -> list[object]:
    bodies = []
    while (delivery := broker.get(queue)) is not None:
        bodies.append((delivery.properties.message_id, delivery.body))
        delivery.ack()
    return bodies


def test_an_event_commits_with_its_write_and_goes_out_after(
    engine: sa.Engine, outbox: Outbox
) -> None:
    broker = MemoryBroker()
    with Session(engine) as session, session.begin():
        session.execute(ORDERS.insert().values(id=1, item="book"))
        sent = outbox.add(
            session, "orders", {"order": 1}, key="customer:7", headers={"tenant": "a"}
        )
    [row] = rows(engine, outbox.table)
    assert (row.id, row.target, row.key) == (sent, "orders", "customer:7")
    relay = OutboxRelay(outbox, engine, Producer(broker))
    assert relay.drain() == 1
    delivery = broker.get("orders")
    assert delivery is not None
    assert delivery.properties.message_id == sent  # the row's id: dedup absorbs copies
    assert delivery.body == b'{"order":1}'
    assert delivery.properties.headers["tenant"] == "a"
    assert rows(engine, outbox.table) == []  # deleted once confirmed
    broker.close()


def test_a_rolled_back_transaction_leaves_no_event(engine: sa.Engine, outbox: Outbox) -> None:
    broker = MemoryBroker()
    with Session(engine) as session:
        session.execute(ORDERS.insert().values(id=2, item="pen"))
        outbox.add(session, "orders", {"order": 2})
        session.rollback()
    assert rows(engine, outbox.table) == []
    assert OutboxRelay(outbox, engine, Producer(broker)).drain() == 0
    assert broker.depth("orders") == 0
    broker.close()


def test_rows_of_one_key_go_out_in_order_across_batches(engine: sa.Engine, outbox: Outbox) -> None:
    broker = MemoryBroker()
    with Session(engine) as session, session.begin():
        for n in range(12):
            outbox.add(session, "orders", {"key": f"k{n % 3}", "n": n}, key=f"k{n % 3}")
        for n in range(5):
            outbox.add(session, "orders", {"key": None, "n": 100 + n})
    relay = OutboxRelay(outbox, engine, Producer(broker), batch_size=4)
    published = []
    while (batch := relay.relay_once()).published:
        published.append(batch.published)
    assert sum(published) == 17
    assert max(published) == 4  # several batches: order held across them
    bodies = [body for _, body in drain_queue(broker, "orders")]
    import json

    decoded = [json.loads(body) for body in bodies]
    for key in ("k0", "k1", "k2"):
        ns = [d["n"] for d in decoded if d["key"] == key]
        assert ns == sorted(ns)
        assert len(ns) == 4
    broker.close()


def test_a_row_the_broker_refuses_is_moved_aside_and_the_rest_go_out(
    engine: sa.Engine, outbox: Outbox
) -> None:
    broker = MemoryBroker()
    broker.declare_queue(QueueSpec("orders"))
    recorder = EventRecorder()
    listeners = Listeners()
    listeners.add(recorder)
    with Session(engine) as session, session.begin():
        outbox.add(session, "orders", {"n": 1}, key="k")
        bad = outbox.add(session, "no_such_queue", {"n": 2}, key="k")  # unroutable
        outbox.add(session, "orders", {"n": 3}, key="k")  # behind it: not blocked
    relay = OutboxRelay(outbox, engine, Producer(broker, declare=False), listeners=listeners)
    assert relay.drain() == 2
    assert [json_n(b) for _, b in drain_queue(broker, "orders")] == [1, 3]
    [dead] = rows(engine, outbox.dead)
    assert dead.id == bad
    assert "NO_ROUTE" in dead.error
    assert rows(engine, outbox.table) == []
    assert [e.count for e in recorder.of_type(OutboxRowsRefused)] == [1]
    assert sum(e.count for e in recorder.of_type(OutboxRelayed)) == 2
    broker.close()


def json_n(body: bytes) -> int:
    import json

    return int(json.loads(body)["n"])


class FlakyBroker(MemoryBroker):
    """Loses the connection for the first `outages` publishes."""

    def __init__(self, outages: int) -> None:
        super().__init__()
        self.outages = outages

    def publish(self, messages: Sequence[Outgoing], *, timeout: float = 30.0) -> None:
        if self.outages:
            self.outages -= 1
            raise ConnectionLost("broker down", [m.properties.message_id or "" for m in messages])
        super().publish(messages, timeout=timeout)


def test_rows_stay_while_the_broker_is_down_and_go_out_after(
    engine: sa.Engine, outbox: Outbox
) -> None:
    broker = FlakyBroker(outages=3)
    recorder = EventRecorder()
    listeners = Listeners()
    listeners.add(recorder)
    with Session(engine) as session, session.begin():
        for n in range(3):
            outbox.add(session, "orders", {"n": n})
    relay = OutboxRelay(
        outbox,
        engine,
        Producer(broker, reconnect_timeout=0),
        poll_interval=0.05,
        max_backoff=0.05,
        listeners=listeners,
    )
    with pytest.raises(ConnectionLost):
        relay.relay_once()
    assert len(rows(engine, outbox.table)) == 3  # nothing lost
    with relay:  # the running relay retries with backoff
        wait_until(lambda: broker.depth("orders") == 3, timeout=10)
    assert len(recorder.of_type(OutboxRelayFailed)) >= 2
    assert rows(engine, outbox.table) == []
    broker.close()


def test_a_running_relay_polls_and_publishes_through_an_event_bus(
    engine: sa.Engine, outbox: Outbox
) -> None:
    broker = MemoryBroker()
    bus = EventBus(broker)
    seen: list[Message] = []
    done = threading.Event()

    def welcome(message: Message) -> None:
        seen.append(message)
        done.set()

    bus.subscribe("user.*", welcome, group="email")
    with bus, OutboxRelay(outbox, engine, bus, poll_interval=0.05):
        with Session(engine) as session, session.begin():
            sent = outbox.add(session, "user.signed_up", {"id": 7})
        assert done.wait(10)
    assert (seen[0].id, seen[0].type, seen[0].body) == (sent, "user.signed_up", {"id": 7})
    broker.close()


def test_add_refuses_an_autocommitting_connection(tmp_path: Path, outbox: Outbox) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'auto.db'}", isolation_level="AUTOCOMMIT")
    outbox.metadata.create_all(engine)
    with Session(engine) as session, pytest.raises(OutboxError, match="autocommits"):
        outbox.add(session, "orders", {"n": 1})
    assert rows(engine, outbox.table) == []


def test_add_refuses_a_read_only_router_scope(tmp_path: Path) -> None:
    from scalepatterns.routing import ReadOnlyViolation, ReadWriteRouter

    primary = sa.create_engine(f"sqlite:///{tmp_path / 'primary.db'}")
    replica = sa.create_engine(f"sqlite:///{tmp_path / 'replica.db'}")
    outbox = Outbox()
    for engine in (primary, replica):
        outbox.metadata.create_all(engine)
    router = ReadWriteRouter(primary, {"r1": replica})
    with router.sessionmaker()() as session:
        with router.read_only(session), pytest.raises(ReadOnlyViolation):
            outbox.add(session, "orders", {"n": 1})
        outbox.add(session, "orders", {"n": 2})  # outside the scope: on the primary
        session.commit()
    assert len(rows(primary, outbox.table)) == 1
    assert rows(replica, outbox.table) == []


def test_a_sharded_session_writes_the_row_into_the_keys_shard(tmp_path: Path) -> None:
    from scalepatterns.sharding import HashRing, ShardedSession, ShardRouter

    shards = {s: sa.create_engine(f"sqlite:///{tmp_path / s}.db") for s in ("s1", "s2", "s3")}
    outbox = Outbox()
    for engine in shards.values():
        outbox.metadata.create_all(engine)
    router = ShardRouter(HashRing(list(shards)), shards)
    with ShardedSession(router, {Order: "id"}) as session:
        for n in range(30):
            outbox.add(session, "orders", {"n": n}, key=f"user:{n}")
        session.commit()
    for name, engine in shards.items():
        for row in rows(engine, outbox.table):
            assert router.shard_for(row.key) == name
    assert sum(len(rows(e, outbox.table)) for e in shards.values()) == 30
    with (
        pytest.raises(ValueError, match="shard key"),
        ShardedSession(router, {Order: "id"}) as session,
    ):
        outbox.add(session, "orders", {"n": 1})


def test_bad_arguments_are_refused_before_anything_is_written(
    engine: sa.Engine, outbox: Outbox
) -> None:
    with Session(engine) as session:
        with pytest.raises(ValueError, match="target"):
            outbox.add(session, "", {"n": 1})
        with pytest.raises(ValueError, match="key"):
            outbox.add(session, "orders", {"n": 1}, key="k" * 300)
        session.commit()
    assert rows(engine, outbox.table) == []
    with pytest.raises(ValueError, match="name"):
        Outbox(name="drop table; --")
    with pytest.raises(ValueError, match="poll_interval"):
        OutboxRelay(outbox, engine, Producer(MemoryBroker()), poll_interval=float("nan"))
    with pytest.raises(ValueError, match="publisher"):
        OutboxRelay(outbox, engine, MemoryBroker())  # type: ignore[arg-type]


def test_async_add_and_relay(tmp_path: Path) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    async def main() -> list[object]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.db'}")
        outbox = Outbox()
        async with engine.begin() as conn:
            await conn.run_sync(outbox.metadata.create_all)
        broker = AsyncMemoryBroker()
        async with AsyncSession(engine) as session, session.begin():
            for n in range(3):
                await outbox.aadd(session, "orders", {"n": n}, key="k")
        async with AsyncSession(engine) as session:
            await outbox.aadd(session, "orders", {"n": 99})
            await session.rollback()
        relay = AsyncOutboxRelay(outbox, engine, AsyncProducer(broker), poll_interval=0.05)
        assert await relay.drain() == 3
        async with AsyncSession(engine) as session, session.begin():
            await outbox.aadd(session, "orders", {"n": 3}, key="k")
        async with relay:  # a task polling the table
            await until(lambda: _is(broker.depth("orders"), 4))
        bodies = drain_queue(broker.sync, "orders")
        await broker.close()
        await engine.dispose()
        return bodies

    bodies = asyncio.run(main())
    assert [json_n(b) for _, b in bodies] == [0, 1, 2, 3]  # in order, none rolled back


async def _is(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]
