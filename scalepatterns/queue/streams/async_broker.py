"""`AsyncRedisStreamsBroker`: `RedisStreamsBroker` for asyncio, on a ``redis.asyncio``
client: each subscription's consuming loop is a task, and one settler task sends the
settlements. The flows are the sync broker's (`core.py`), awaited."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from scalepatterns._redis_url import aclose_client
from scalepatterns._steps import Flow, R, adrive
from scalepatterns._within import within
from scalepatterns.errors import BackendUnavailable
from scalepatterns.events import Listeners
from scalepatterns.queue.broker import Delivery, Outgoing, QueueSpec
from scalepatterns.queue.streams.consumer import GIVE_BACK, Consumer, StreamsDelivery
from scalepatterns.queue.streams.core import StreamsCore
from scalepatterns.queue.streams.keys import DEFAULT_PREFIX
from scalepatterns.queue.streams.settings import StreamsSettings, describe, make_client
from scalepatterns.queue.streams.sync_broker import DEFAULT_URL

__all__ = ["AsyncRedisStreamsBroker"]

_log = logging.getLogger("scalepatterns.queue.redis")


class _LoopWaker:
    """A wake-up call for a task on `loop`, settable from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.get_ident()
        self._event = asyncio.Event()

    def set(self) -> None:
        if threading.get_ident() == self._thread:
            self._event.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):  # not the builtin before 3.11
            await within(self._event.wait(), timeout)
        self._event.clear()


class _AsyncSubscription:
    def __init__(self, broker: AsyncRedisStreamsBroker, consumer: Consumer) -> None:
        self._broker = broker
        self.consumer = consumer
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            await adrive(self.consumer.loop(self._broker._core.client))
        except Exception:  # noqa: BLE001 - logged; the queue's messages stay safe in Redis
            if not self.consumer.cancelled:  # else: the client was closed under its read
                _log.exception("the consumer of %s stopped", self.consumer.keys.queue)

    async def cancel(self) -> None:
        self.consumer.stop(close=False)

    async def close(self) -> None:
        # As the sync subscription's: the loop ends by itself, giving back late fetches.
        await self._broker._give_back(self.consumer.stop(close=True))
        with contextlib.suppress(BackendUnavailable):
            await self._broker._run(self.consumer.forget(self._broker._core.client), "closing")

    async def join(self) -> None:
        """Wait for the loop to end; one in a blocking read (which fetches nothing) is
        cancelled."""
        if self.consumer.reading:
            self.task.cancel()
        await asyncio.wait([self.task], timeout=self._broker._core.settings.timeout + 1)


class AsyncRedisStreamsBroker:
    """`RedisStreamsBroker` for asyncio services: the same options and behaviour, on a
    ``redis.asyncio`` client (or a URL); nothing blocks the event loop.

    ```python
    import asyncio
    from scalepatterns.queue import AsyncProducer, AsyncRedisStreamsBroker, AsyncWorker

    async def main() -> None:
        broker = AsyncRedisStreamsBroker("redis://127.0.0.1:6379/0", prefix="sp:docs:")
        done = asyncio.Event()

        async def greet(message) -> None:
            done.set()

        async with AsyncWorker(broker, "docs.async_greetings", greet):
            await AsyncProducer(broker).publish("docs.async_greetings", {"name": "Ada"})
            await asyncio.wait_for(done.wait(), 5)
        await broker.delete_queue("docs.async_greetings")
        await broker.delete_queue("docs.async_greetings.dead")
        await broker.close()

    asyncio.run(main())
    ```
    """

    def __init__(
        self,
        client_or_url: Any = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        visibility_timeout: float = 30.0,
        max_message_size: int = 1024 * 1024,
        min_replicas: int = 0,
        replica_timeout: float = 1.0,
        timeout: float = 5.0,
        listeners: Listeners | None = None,
    ) -> None:
        settings = StreamsSettings(
            prefix=prefix,
            visibility_timeout=visibility_timeout,
            max_message_size=max_message_size,
            min_replicas=min_replicas,
            replica_timeout=replica_timeout,
            timeout=timeout,
            **({"listeners": listeners} if listeners is not None else {}),
        )
        client, self._owns_client = make_client(client_or_url, settings, asyncio=True)
        self.url = describe(client)
        self._core = StreamsCore(client, settings, self.url)
        self._flush_lock: asyncio.Lock | None = None
        self._settle_wanted: _LoopWaker | None = None
        self._settler: asyncio.Task[None] | None = None
        self._subscriptions: set[_AsyncSubscription] = set()
        self._closed = False

    @property
    def client(self) -> Any:
        """The ``redis.asyncio`` client the broker talks through."""
        return self._core.client

    async def _run(self, flow: Flow[R], what: str, unconfirmed: Sequence[str] = ()) -> R:
        if self._closed:
            raise BackendUnavailable("redis", "the broker was closed")
        return await adrive(self._core.guard(flow, what, unconfirmed))

    # -- settling ---------------------------------------------------------------------

    def _start_settler(self) -> _LoopWaker:
        """The settler's wake-up call; the settler starts on the running loop first."""
        if self._settle_wanted is None:
            self._settle_wanted = _LoopWaker(asyncio.get_running_loop())
            self._settler = asyncio.ensure_future(self._settle_loop(self._settle_wanted))
        return self._settle_wanted

    def _settled(self) -> None:
        if self._settle_wanted is not None:
            self._settle_wanted.set()

    def _settle_got(self, delivery: StreamsDelivery, kind: str) -> None:
        self._core.settlements.add(delivery, kind)
        self._settled()

    async def _give_back(self, deliveries: list[StreamsDelivery]) -> None:
        for delivery in deliveries:
            self._core.settlements.add(delivery, GIVE_BACK)
        with contextlib.suppress(BackendUnavailable):
            await self.flush()

    async def flush(self) -> None:
        """Send the settlements waiting now (see `RedisStreamsBroker.flush`)."""
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:
            await adrive(self._core.guard(self._core.send_settlements(), "settling deliveries"))

    async def _settle_loop(self, wanted: _LoopWaker) -> None:
        failures = 0
        while not self._closed:
            await wanted.wait(0.5)
            if not self._core.settlements:
                continue
            try:
                await self.flush()
                failures = 0
            except BackendUnavailable as exc:
                failures += 1
                if failures == 1:
                    _log.warning("could not send settlements (%s); trying again", exc)
                await asyncio.sleep(min(2.0, 0.05 * 2**failures))
                wanted.set()

    # -- topology ---------------------------------------------------------------------

    async def declare_queue(self, spec: QueueSpec) -> None:
        await self._run(self._core.declare_queue(spec), f"declaring {spec.name!r}")

    async def ensure_queue(self, name: str) -> None:
        await self._run(self._core.ensure_queue(name), f"declaring {name!r}")

    async def declare_delay(self, queue: str, delay: float) -> str:
        return self._core.declare_delay(queue, delay)

    async def declare_exchange(self, name: str) -> None:
        await self._run(self._core.declare_exchange(name), f"declaring exchange {name!r}")

    async def bind(self, exchange: str, queue: str, pattern: str) -> None:
        await self._run(self._core.bind(exchange, queue, pattern), f"binding {queue!r}")

    async def delete_queue(self, name: str) -> None:
        await self.flush()
        await self._run(self._core.delete_queue(name), f"deleting {name!r}")

    async def delete_exchange(self, name: str) -> None:
        await self._run(self._core.delete_exchange(name), f"deleting exchange {name!r}")

    # -- publishing and consuming -----------------------------------------------------

    async def publish(self, messages: Sequence[Outgoing], *, timeout: float = 30.0) -> None:
        """As `RedisStreamsBroker.publish`. A cancelled call may have stored messages
        (one script call does not stop halfway) but never reports one as sent."""
        if messages:
            ids = [m.properties.message_id or "" for m in messages]
            target = messages[0].exchange or messages[0].routing_key
            await self._run(self._core.publish(messages), f"publishing to {target!r}", ids)

    async def consume(
        self, queue: str, *, prefetch: int, on_delivery: Callable[[Delivery], None]
    ) -> _AsyncSubscription:
        wanted = self._start_settler()
        waker = _LoopWaker(asyncio.get_running_loop())
        consumer = await self._run(
            self._core.consumer(queue, prefetch, on_delivery, waker, wanted.set),
            f"consuming {queue!r}",
        )
        subscription = _AsyncSubscription(self, consumer)
        self._subscriptions = {s for s in self._subscriptions if not s.task.done()}
        self._subscriptions.add(subscription)
        return subscription

    async def get(self, queue: str) -> Delivery | None:
        self._start_settler()
        await self.flush()
        return await self._run(self._core.get(queue, self._settle_got), f"getting from {queue!r}")

    async def depth(self, queue: str) -> int:
        """As `RedisStreamsBroker.depth`."""
        await self.flush()
        return await self._run(self._core.depth(queue), f"depth of {queue!r}")

    # -- lifecycle --------------------------------------------------------------------

    async def close(self) -> None:
        """As `RedisStreamsBroker.close`."""
        if self._closed:
            return
        for subscription in self._subscriptions:
            await subscription.close()
        for subscription in self._subscriptions:
            await subscription.join()
        with contextlib.suppress(BackendUnavailable):
            await self.flush()
        self._closed = True
        if self._settler is not None:
            self._settler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._settler
        if self._owns_client:
            await aclose_client(self._core.client)

    async def __aenter__(self) -> AsyncRedisStreamsBroker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncRedisStreamsBroker({self.url!r}, prefix={self._core.prefix!r})"
