"""`OutboxRelay` and `AsyncOutboxRelay`: publish committed outbox rows, then delete them.

One batch, in one database transaction: claim the oldest row of each key (``SELECT ...
FOR UPDATE SKIP LOCKED``: several relays share the work and never hold the same row),
publish them with pipelined confirms, delete the confirmed ones, move the ones the broker
refused for good aside (``<name>_dead``, with the broker's reason), and commit. A relay
that dies mid-batch rolls back: its rows are claimed again and published again (at least
once; the row id is the message id, so a dedup store absorbs the copy).

Only the oldest row of a key is claimable, so the next row of that key goes out once the
previous one was confirmed and deleted: rows of one key are published in commit order
(`Outbox.add` makes writers of one key commit in turn on PostgreSQL; SQLite writes one
transaction at a time). Rows without a key go out in batches as they come.

The relay waits for work with PostgreSQL's ``LISTEN`` (``Outbox.add`` notifies at commit)
and polls every `poll_interval` as well; on other databases it polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scalepatterns._checks import seconds
from scalepatterns._steps import Flow, adrive, drive
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.outbox.events import OutboxRelayed, OutboxRelayFailed, OutboxRowsRefused
from scalepatterns.outbox.outbox import Outbox
from scalepatterns.queue.async_producer import AsyncProducer
from scalepatterns.queue.broker import Outgoing, Properties
from scalepatterns.queue.bus import AsyncEventBus, EventBus
from scalepatterns.queue.errors import ConnectionLost, PublishError
from scalepatterns.queue.producer import Producer

__all__ = ["AsyncOutboxRelay", "OutboxRelay", "RelayBatch"]

_log = logging.getLogger("scalepatterns.outbox")


@dataclass(frozen=True)
class RelayBatch:
    """What one batch did: rows `published` (and deleted), `refused` (moved aside), and
    `kept` for a later batch because of `error` (the broker or the database failed)."""

    published: int = 0
    refused: int = 0
    kept: int = 0
    error: Exception | None = None


class _Relaying:
    """What both relays do, as flows of I/O steps (see `scalepatterns._steps`)."""

    def __init__(
        self,
        outbox: Outbox,
        publisher: Producer | AsyncProducer | EventBus | AsyncEventBus,
        batch_size: int,
        clock: Clock,
        listeners: Listeners,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError("batch_size", batch_size, "an int >= 1")
        sa = outbox._sa
        self.outbox = outbox
        self.batch_size = batch_size
        self.clock = clock
        self.listeners = listeners
        table = outbox.table
        earlier = table.alias("earlier")
        self.claim = (
            sa.select(table)
            .where(~sa.exists().where(earlier.c.key == table.c.key, earlier.c.seq < table.c.seq))
            .order_by(table.c.seq)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )
        self._sa = sa
        if isinstance(publisher, (EventBus, AsyncEventBus)):
            self.exchange, self.mandatory = publisher.exchange, False
            self.send: Callable[[list[Outgoing]], Any] = publisher.send
            self.prepare: Callable[[str], Any] | None = None
        elif isinstance(publisher, (Producer, AsyncProducer)):
            self.exchange, self.mandatory = "", True
            self.send = lambda messages: publisher.send(outbox.name, messages)
            self.prepare = publisher.target
        else:
            raise ConfigurationError(
                "publisher", publisher, "a Producer or EventBus (or their Async forms)"
            )
        self._prepared: set[str] = set()

    def _outgoing(self, row: Any) -> Outgoing:
        p = row.properties
        props = Properties(
            message_id=row.id,
            type=p.get("type"),
            content_type=p.get("content_type"),
            timestamp=p.get("timestamp"),
            headers=p.get("headers") or {},
        )
        return Outgoing(self.exchange, row.target, row.body, props, mandatory=self.mandatory)

    def batch(self, connection: Any) -> Flow[RelayBatch]:
        """Claim, publish, delete or move aside: one batch on `connection` (in a
        transaction the caller commits)."""
        sa, table = self._sa, self.outbox.table
        result = yield connection.execute, (self.claim,)
        rows = result.all()
        if not rows:
            return RelayBatch()
        for target in {row.target for row in rows} - self._prepared:
            if self.prepare is not None:
                yield self.prepare, (target,)
            self._prepared.add(target)
        refused: dict[str, str] = {}
        kept: set[str] = set()
        error: Exception | None = None
        try:
            yield self.send, ([self._outgoing(row) for row in rows],)
        except PublishError as exc:
            refused = {i: r for i, r in exc.failed.items() if i not in exc.nacked}
            kept, error = set(exc.nacked), exc if exc.nacked else None
        except ConnectionLost as exc:  # after the producer's own reconnect_timeout
            kept = set(exc.unconfirmed) or {row.id for row in rows}
            error = exc
        done = [row.id for row in rows if row.id not in kept]
        if refused:
            now = self.clock.time()
            yield (
                connection.execute,
                (
                    sa.insert(self.outbox.dead),
                    [
                        {**_columns(row), "error": refused[row.id][:1000], "failed_at": now}
                        for row in rows
                        if row.id in refused
                    ],
                ),
            )
        if done:
            yield connection.execute, (sa.delete(table).where(table.c.id.in_(done)),)
        return RelayBatch(len(done) - len(refused), len(refused), len(kept), error)

    def finish(self, batch: RelayBatch) -> RelayBatch:
        """After a batch committed: its events and logs; raises what failed in it."""
        self._record(batch)
        if batch.error is not None:
            raise batch.error
        return batch

    def drain(self, relay: Any) -> Flow[int]:
        """`relay.relay_once` until nothing is claimable; the rows published."""
        published = 0
        while True:
            batch = yield relay.relay_once, ()
            if not batch.published + batch.refused:  # (only a key's oldest row is claimable:
                return published  # a short batch does not mean an empty outbox)
            published += batch.published

    def _record(self, batch: RelayBatch) -> None:
        source = self.outbox.name
        if batch.refused:
            _log.error(
                "%d outbox row(s) refused by the broker moved to %s_dead", batch.refused, source
            )
        if self.listeners.active:
            if batch.published:
                self.listeners.emit(OutboxRelayed(source=source, count=batch.published))
            if batch.refused:
                self.listeners.emit(OutboxRowsRefused(source=source, count=batch.refused))

    def failed(self, error: BaseException, failures: int, max_backoff: float) -> float:
        """Log and emit a failed batch; the seconds to wait before the next."""
        delay: float = min(max_backoff, 0.05 * 2**failures) * random.uniform(0.5, 1.0)
        _log.warning("outbox relay %s: %s; retrying in %.2fs", self.outbox.name, error, delay)
        if self.listeners.active:
            self.listeners.emit(
                OutboxRelayFailed(source=self.outbox.name, error=type(error).__name__)
            )
        return delay

    def loop(self, io: Any, stopping: Callable[[], bool], max_backoff: float) -> Flow[None]:
        """Relay until `stopping()`: drain, then wait for a notification or the poll."""
        failures = 0
        while not stopping():
            try:
                yield io.drain, ()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the broker or database failed: back off
                failures += 1
                yield io.pause, (self.failed(exc, failures, max_backoff),)
                continue
            yield io.wait, ()


def _columns(row: Any) -> dict[str, Any]:
    return {
        name: getattr(row, name)
        for name in ("seq", "id", "target", "key", "body", "properties", "created_at")
    }


def _check(poll_interval: float, max_backoff: float) -> None:
    seconds("poll_interval", poll_interval, positive=True)
    seconds("max_backoff", max_backoff, positive=True)


class OutboxRelay:
    """Publishes an `Outbox`'s committed rows through a `Producer` (rows' targets are
    queues) or an `EventBus` (event types), on a thread (`start`/`stop`) or in the
    foreground (`run`, until SIGTERM... or `stop` from another thread).

    Args:
        outbox: the `Outbox`.
        engine: the SQLAlchemy `Engine` of the database the outbox rows are in (the
            primary; with a `ReadWriteRouter`, `router.primary`).
        publisher: a `Producer` or an `EventBus`.
        batch_size: rows per batch (one transaction, one pipelined publish).
        poll_interval: seconds between polls (PostgreSQL: also woken by ``NOTIFY``).
        max_backoff: cap of the pause after a failed batch (broker or database down).
        listen: use PostgreSQL's ``LISTEN`` when the engine is PostgreSQL with psycopg.

    ```python
    import sqlalchemy as sa
    from sqlalchemy.orm import Session
    from scalepatterns.outbox import Outbox, OutboxRelay
    from scalepatterns.queue import MemoryBroker, Producer

    engine = sa.create_engine("sqlite://")
    outbox = Outbox()
    outbox.metadata.create_all(engine)
    broker = MemoryBroker()
    with Session(engine) as session, session.begin():
        outbox.add(session, "emails", {"to": "ada@example.com"})
    assert OutboxRelay(outbox, engine, Producer(broker)).drain() == 1
    assert broker.depth("emails") == 1
    ```
    """

    def __init__(
        self,
        outbox: Outbox,
        engine: Any,
        publisher: Producer | EventBus,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        max_backoff: float = 5.0,
        listen: bool = True,
        clock: Clock = SYSTEM_CLOCK,
        listeners: Listeners | None = None,
    ) -> None:
        _check(poll_interval, max_backoff)
        self._relaying = _Relaying(
            outbox, publisher, batch_size, clock, listeners or default_listeners
        )
        self.outbox = outbox
        self.engine = engine
        self._poll_interval = poll_interval
        self._max_backoff = max_backoff
        self._listen = listen and engine.dialect.name == "postgresql"
        self._notifications: Any = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def relay_once(self) -> RelayBatch:
        """One batch in one transaction (committed); raises what failed in it."""
        with self.engine.begin() as connection:
            return self._relaying.finish(drive(self._relaying.batch(connection)))

    def drain(self) -> int:
        """Batches until the outbox has nothing to claim; returns rows published."""
        return drive(self._relaying.drain(self))

    def run(self) -> None:
        """Relay until `stop()` (from another thread); failures are retried with backoff."""
        self._stopping.clear()
        try:
            drive(self._relaying.loop(self, self._stopping.is_set, self._max_backoff))
        finally:
            self._close_notifications()

    def start(self) -> OutboxRelay:
        """Relay on a daemon thread."""
        if self._thread is None or not self._thread.is_alive():
            self._stopping.clear()
            self._thread = threading.Thread(target=self.run, name="sp-outbox-relay", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the batch in progress (committed or rolled back)."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> OutboxRelay:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # the loop's I/O
    def pause(self, delay: float) -> None:
        self._stopping.wait(delay)

    def wait(self) -> None:
        """Until a notification, the poll interval, or `stop()`."""
        if not self._listen:
            self._stopping.wait(self._poll_interval)
            return
        try:
            if self._notifications is None:
                raw = self.engine.raw_connection()
                connection = raw.driver_connection
                connection.autocommit = True
                connection.execute(f'LISTEN "{self.outbox.name}"')
                self._notifications = raw
            connection = self._notifications.driver_connection
            waited = 0.0
            while waited < self._poll_interval and not self._stopping.is_set():
                step = min(0.2, self._poll_interval - waited)  # stop() is seen within 0.2 s
                if any(True for _ in connection.notifies(timeout=step, stop_after=1)):
                    for _ in connection.notifies(timeout=0):  # the others of this burst
                        pass
                    return
                waited += step
        except Exception as exc:  # noqa: BLE001 - no notifications: poll instead, listen again later
            _log.warning("outbox relay %s: LISTEN failed (%s); polling", self.outbox.name, exc)
            self._close_notifications()
            self._stopping.wait(self._poll_interval)

    def _close_notifications(self) -> None:
        raw, self._notifications = self._notifications, None
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.invalidate()  # its LISTEN must not go back to the pool

    def __repr__(self) -> str:
        return f"OutboxRelay({self.outbox.name!r})"


class AsyncOutboxRelay:
    """`OutboxRelay` for asyncio: an `AsyncEngine`, an `AsyncProducer` or `AsyncEventBus`;
    `await relay.run()` (until cancelled or `stop()`), `start()` as a task, `drain()`."""

    def __init__(
        self,
        outbox: Outbox,
        engine: Any,
        publisher: AsyncProducer | AsyncEventBus,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        max_backoff: float = 5.0,
        listen: bool = True,
        clock: Clock = SYSTEM_CLOCK,
        listeners: Listeners | None = None,
    ) -> None:
        _check(poll_interval, max_backoff)
        self._relaying = _Relaying(
            outbox, publisher, batch_size, clock, listeners or default_listeners
        )
        self.outbox = outbox
        self.engine = engine
        self._poll_interval = poll_interval
        self._max_backoff = max_backoff
        self._listen = listen and engine.dialect.name == "postgresql"
        self._notifications: Any = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def relay_once(self) -> RelayBatch:
        """One batch in one transaction (committed); raises what failed in it."""
        async with self.engine.begin() as connection:
            return self._relaying.finish(await adrive(self._relaying.batch(connection)))

    async def drain(self) -> int:
        """Batches until the outbox has nothing to claim; returns rows published."""
        return await adrive(self._relaying.drain(self))

    async def run(self) -> None:
        """Relay until `stop()` or cancellation (the batch in progress rolls back)."""
        self._stopping = False
        try:
            await adrive(self._relaying.loop(self, lambda: self._stopping, self._max_backoff))
        finally:
            await self._close_notifications()

    def start(self) -> AsyncOutboxRelay:
        """Relay in a task of the running loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run())
        return self

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> AsyncOutboxRelay:
        return self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # the loop's I/O
    async def pause(self, delay: float) -> None:
        await asyncio.sleep(delay)

    async def wait(self) -> None:
        """Until a notification or the poll interval."""
        if not self._listen:
            await asyncio.sleep(self._poll_interval)
            return
        try:
            if self._notifications is None:
                holder = await self.engine.connect()
                raw = await holder.get_raw_connection()
                connection = raw.driver_connection
                await connection.set_autocommit(True)
                await connection.execute(f'LISTEN "{self.outbox.name}"')
                self._notifications = holder
            raw = await self._notifications.get_raw_connection()
            async for _ in raw.driver_connection.notifies(
                timeout=self._poll_interval, stop_after=1
            ):
                return
        except Exception as exc:  # noqa: BLE001 - no notifications: poll instead, listen again later
            _log.warning("outbox relay %s: LISTEN failed (%s); polling", self.outbox.name, exc)
            await self._close_notifications()
            await asyncio.sleep(self._poll_interval)

    async def _close_notifications(self) -> None:
        holder, self._notifications = self._notifications, None
        if holder is not None:
            with contextlib.suppress(Exception):
                await holder.invalidate()
                await holder.close()

    def __repr__(self) -> str:
        return f"AsyncOutboxRelay({self.outbox.name!r})"
