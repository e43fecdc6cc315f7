"""`AsyncRabbitMQBroker`: the `AsyncBroker` Protocol over pika, on the application's loop.

The connection is pika's `AsyncioConnection` on the running event loop: no thread, no
blocking socket call. It runs the same link as the sync broker (`link.py`): publishing
pipelines a batch and waits for its last confirm, consumers hand deliveries to the
worker on the loop, acks go out in batches once per loop iteration.

Why pika and not aio-pika: pika is already the sync broker's driver, so both brokers run
one connection core, reconnect and confirm logic; and in `benchmarks/queue.py` it
publishes and consumes at least as fast as aio-pika (see docs/queue.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import weakref
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, cast

from scalepatterns._deps import require
from scalepatterns._within import within
from scalepatterns.errors import BackendUnavailable, ConfigurationError, DeadlineExceeded
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.queue.broker import Delivery, Outgoing, QueueSpec
from scalepatterns.queue.errors import BrokerBlocked, ConnectionLost
from scalepatterns.queue.rabbitmq import topology
from scalepatterns.queue.rabbitmq.confirms import Batch, ConfirmWait, raise_for_outcome
from scalepatterns.queue.rabbitmq.consumer import Consumer, RabbitDelivery
from scalepatterns.queue.rabbitmq.frames import batching
from scalepatterns.queue.rabbitmq.link import Link, NotFound, Op
from scalepatterns.queue.rabbitmq.settings import DEFAULT_URL, BrokerSettings

__all__ = ["AsyncRabbitMQBroker"]

# Messages handed to pika per loop iteration: each costs ~10 us to frame, so a slice
# keeps other tasks' wait under a millisecond while a big batch goes out.
_SLICE = 32


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class _Loop:
    """The application's asyncio loop as the `EventLoop` the link runs on."""

    def __init__(self, pika: ModuleType, loop: asyncio.AbstractEventLoop) -> None:
        self._connection_class = batching(
            require(
                "pika.adapters.asyncio_connection", extra="rabbitmq", feature="AsyncRabbitMQBroker"
            ).AsyncioConnection
        )
        self.loop = loop

    def connect(
        self,
        parameters: Any,
        on_open: Callable[[Any], None],
        on_open_error: Callable[[Any, BaseException], None],
        on_close: Callable[[Any, BaseException], None],
    ) -> Any:
        return self._connection_class(
            parameters,
            on_open_callback=on_open,
            on_open_error_callback=on_open_error,
            on_close_callback=on_close,
            custom_ioloop=self.loop,
        )

    def call_later(self, delay: float, fn: Callable[[], None]) -> Callable[[], None]:
        return self.loop.call_later(delay, fn).cancel

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        self.loop.call_soon_threadsafe(fn)

    def new_flag(self) -> asyncio.Event:
        return asyncio.Event()


def _close_when_dropped(loop: _Loop, link: Link) -> None:
    """A broker dropped without `close()` stops reconnecting and closes its connection."""
    if not loop.loop.is_closed():
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(lambda: link.close(lambda: None))


class _Subscription:
    def __init__(self, broker: AsyncRabbitMQBroker, consumer: Consumer) -> None:
        self._broker = broker
        self._consumer = consumer

    async def cancel(self) -> None:
        await self._broker._end(self._consumer.cancel, "basic.cancel")

    async def close(self) -> None:
        await self._broker._end(self._consumer.close, "channel.close")


class AsyncRabbitMQBroker:
    """An `AsyncBroker` on RabbitMQ: pika's `AsyncioConnection` on the running loop.

    Takes the same arguments as `RabbitMQBroker` (several node URLs included). It may be
    created anywhere; it connects on first use and then belongs to that event loop (use
    one broker per loop). Every method is a coroutine, and none blocks the loop.

    ```python
    import asyncio
    from scalepatterns.queue import AsyncProducer, AsyncRabbitMQBroker

    async def main() -> None:
        async with AsyncRabbitMQBroker("amqp://guest:guest@127.0.0.1:5672/%2F") as broker:
            await AsyncProducer(broker).publish("emails", {"to": "ada@example.com"})
    ```
    """

    def __init__(
        self,
        url: str | Sequence[str] = DEFAULT_URL,
        *,
        heartbeat: int = 30,
        connect_timeout: float = 10.0,
        blocked_timeout: float = 30.0,
        reconnect_max_delay: float = 5.0,
        window: int = 5000,
        listeners: Listeners | None = None,
    ) -> None:
        self._settings = BrokerSettings(
            url,
            heartbeat=heartbeat,
            connect_timeout=connect_timeout,
            blocked_timeout=blocked_timeout,
            reconnect_max_delay=reconnect_max_delay,
            window=window,
            listeners=listeners or default_listeners,
        )
        self._pika = self._settings.load_pika("AsyncRabbitMQBroker")
        self._nodes = self._settings.parameters(self._pika)
        self.url = self._settings.describe()
        self._link: Link | None = None
        self._get_lock: asyncio.Lock | None = None
        self._closed = False

    @property
    def connections(self) -> int:
        """Connections opened so far (1 + reconnections)."""
        return 0 if self._link is None else self._link.connections

    def _bound(self) -> Link:
        """The link on the running loop, made on first use."""
        if self._closed:
            raise BackendUnavailable("rabbitmq", "the broker was closed")
        running = asyncio.get_running_loop()
        link = self._link
        if link is None:
            loop = _Loop(self._pika, running)
            link = Link(
                self._pika,
                self._nodes,
                self._settings.urls,
                loop,
                reconnect_max_delay=self._settings.reconnect_max_delay,
                listeners=self._settings.listeners,
            )
            self._link = link
            self._get_lock = asyncio.Lock()
            weakref.finalize(self, _close_when_dropped, loop, link)
            link.connect()
        elif cast(_Loop, link.loop).loop is not running:
            raise ConfigurationError(
                "event loop",
                running,
                "the loop this AsyncRabbitMQBroker first ran on (create one broker per loop)",
            )
        return link

    async def _wait_ready(self, timeout: float) -> Link:
        link = self._bound()
        ready = cast(asyncio.Event, link.ready)
        if not ready.is_set():
            try:
                await within(ready.wait(), timeout)
            except asyncio.TimeoutError:
                error = link.connection_error
                raise ConnectionLost(
                    f"not connected to {link.url} after {timeout:.1f}s"
                    + (f": {error}" if error else "")
                ) from None
        if link.refused is not None:
            raise link.refused
        return link

    async def _call(self, op: Op, what: str, timeout: float = 30.0) -> Any:
        """Run `op(ok, fail)` on the link and wait for its result."""
        link = await self._wait_ready(min(timeout, self._settings.connect_timeout))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        link.run(
            op,
            functools.partial(_resolve, future),
            functools.partial(_reject, future),
            what,
        )
        try:
            return await within(future, timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(timeout, what) from None

    async def _end(self, op: Op, what: str) -> None:
        """Cancel or close a consumer; with no connection there is nothing to stop."""
        link = self._link
        if link is None or self._closed:
            return
        if not link.ready.is_set() or link.refused is not None:
            op(lambda _v: None, lambda _e: None)
            return
        with contextlib.suppress(BackendUnavailable, DeadlineExceeded):
            await self._call(op, what, 10.0)

    # -- topology ---------------------------------------------------------------------

    async def declare_queue(self, spec: QueueSpec) -> None:
        link = self._bound()
        await self._call(functools.partial(topology.declare_queue, link, spec), spec.name)

    async def ensure_queue(self, name: str) -> None:
        link = self._bound()
        await self._call(functools.partial(topology.ensure_queue, link, name), name)

    async def declare_delay(self, queue: str, delay: float) -> str:
        link = self._bound()
        name: str = await self._call(
            functools.partial(topology.declare_delay, link, queue, delay), queue
        )
        return name

    async def declare_exchange(self, name: str) -> None:
        link = self._bound()
        await self._call(functools.partial(topology.declare_exchange, link, name), name)

    async def bind(self, exchange: str, queue: str, pattern: str) -> None:
        link = self._bound()
        await self._call(functools.partial(topology.bind, link, exchange, queue, pattern), queue)

    async def delete_queue(self, name: str) -> None:
        link = self._bound()
        await self._call(functools.partial(topology.delete_queue, link, name), name)

    async def delete_exchange(self, name: str) -> None:
        link = self._bound()
        await self._call(functools.partial(topology.delete_exchange, link, name), name)

    async def depth(self, queue: str) -> int:
        link = self._bound()
        count: int = await self._call(functools.partial(topology.depth, link, queue), queue)
        return count

    # -- publishing -------------------------------------------------------------------

    async def publish(self, messages: Sequence[Outgoing], *, timeout: float = 30.0) -> None:
        """Publish and return once the broker confirmed every message (see `Broker`).

        Cancelled while waiting, it raises `CancelledError`: nothing is reported sent,
        the connection stays usable, and confirms arriving later are dropped.
        """
        if not messages:
            return
        blocked_timeout = self._settings.blocked_timeout
        wait = ConfirmWait(timeout, blocked_timeout, time.monotonic())
        link = self._bound()
        unblocked = cast(asyncio.Event, link.unblocked)
        if not unblocked.is_set():
            try:
                await within(unblocked.wait(), blocked_timeout)
            except asyncio.TimeoutError:
                raise BrokerBlocked(link.blocked_reason, blocked_timeout) from None
        link = await self._wait_ready(min(timeout, self._settings.connect_timeout))
        loop = asyncio.get_running_loop()
        window = self._settings.window
        batches = []
        for start in range(0, len(messages), window):
            chunk = messages[start : start + window]
            done: asyncio.Future[Any] = loop.create_future()
            batch = Batch(
                [m.properties.message_id or "" for m in chunk],
                functools.partial(_resolve, done, None),
            )
            link.track(batch)
            try:
                for offset in range(0, len(chunk), _SLICE):
                    if offset:
                        await asyncio.sleep(0)
                    link.publish(chunk[offset : offset + _SLICE], batch)
                while not done.done():
                    await asyncio.wait((done,), timeout=0.05)
                    if not done.done():
                        wait.check(
                            time.monotonic(),
                            blocked=not unblocked.is_set(),
                            reason=link.blocked_reason,
                        )
            finally:
                link.untrack(batch)
            batches.append(batch)
        raise_for_outcome(batches, messages[0].exchange or messages[0].routing_key, self.url)

    # -- consuming --------------------------------------------------------------------

    async def consume(
        self, queue: str, *, prefetch: int, on_delivery: Callable[[Delivery], None]
    ) -> _Subscription:
        """Start delivering `queue`; `on_delivery` runs on the event loop (keep it short:
        hand the delivery to a task)."""
        link = self._bound()
        consumer = Consumer(link, queue, prefetch, on_delivery)
        link.add_consumer(consumer)
        try:
            await self._call(consumer.start, f"consuming {queue!r}")
        except BaseException:
            consumer.close(lambda _v: None, lambda _e: None)  # or it could consume unseen
            raise
        return _Subscription(self, consumer)

    async def get(self, queue: str) -> Delivery | None:
        link = self._bound()
        assert self._get_lock is not None  # made with the link
        # One basic.get at a time on the shared get channel (AMQP allows no second one).
        async with self._get_lock:
            try:
                delivery: Delivery | None = await self._call(
                    functools.partial(link.basic_get, queue, RabbitDelivery),
                    f"basic.get on {queue!r}",
                )
            except NotFound:
                return None
            except (DeadlineExceeded, asyncio.CancelledError):
                link.close_get_channel()  # a late answer is requeued, not lost
                raise
        return delivery

    # -- lifecycle --------------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection; afterwards every call raises `BackendUnavailable`."""
        link, self._closed = self._link, True
        if link is None or link.closing:
            return
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        link.close(functools.partial(_resolve, future, None))
        with contextlib.suppress(asyncio.TimeoutError):
            await within(asyncio.shield(future), 10)

    async def __aenter__(self) -> AsyncRabbitMQBroker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncRabbitMQBroker({self.url!r})"
