"""`AsyncWorker`: `Worker` for asyncio services: handlers run as tasks on the application's
own event loop (the steps of one message are in `handling.py`, shared with `Worker`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from scalepatterns._coroutines import call_async, is_coroutine_callable
from scalepatterns._steps import adrive
from scalepatterns._within import within
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.queue.broker import AsyncBroker, AsyncSubscription, Delivery, Outgoing, QueueSpec
from scalepatterns.queue.dedup import AsyncDedupStore, Claim
from scalepatterns.queue.handling import Handler, WorkerSettings, handle
from scalepatterns.queue.message import Message
from scalepatterns.queue.retry import RetryPolicy
from scalepatterns.serializers import JsonSerializer, Serializer

__all__ = ["AsyncWorker"]

_log = logging.getLogger("scalepatterns.queue")
_GIVE_BACK_PAUSE = 1.0


def _awaitable_handler(handler: Handler) -> Callable[[Message], Awaitable[Any]]:
    """How the worker calls `handler`: its async ``acall`` if it has one (a task
    registry, an event bus group), else `call_async` (awaited, or in a thread)."""
    acall = getattr(handler, "acall", None)
    if acall is not None and is_coroutine_callable(acall):
        return acall  # type: ignore[no-any-return]
    if is_coroutine_callable(handler):
        return handler
    return functools.partial(call_async, handler)


class _Awaits:
    """The I/O of `handle`, as awaitables."""

    def __init__(self, worker: AsyncWorker, call: Callable[[Message], Awaitable[Any]]) -> None:
        self._worker = worker
        self.call = call

    def claim(self, mark: str, ttl: float) -> Awaitable[Claim]:
        assert self._worker._dedup is not None  # asked only with a store
        return self._worker._dedup.aclaim(mark, ttl)

    def complete(self, mark: str, ttl: float) -> Awaitable[None]:
        assert self._worker._dedup is not None
        return self._worker._dedup.acomplete(mark, ttl)

    def release(self, mark: str) -> Awaitable[None]:
        assert self._worker._dedup is not None
        return self._worker._dedup.arelease(mark)

    def declare_delay(self, delay: float) -> Awaitable[str]:
        return self._worker.broker.declare_delay(self._worker.queue, delay)

    def publish(self, message: Outgoing) -> Awaitable[None]:
        return self._worker.broker.publish([message], timeout=30.0)


class AsyncWorker:
    """Consumes `queue` on an `AsyncBroker` and runs `handler` as tasks on the running loop.

    The same guarantees and options as `Worker` (retries through delay queues,
    dead-letter headers, dedup, ack after the handler returned); `concurrency` is the
    number of handlers running at once. Handlers are ``async def``; a plain function
    runs in a thread (`asyncio.to_thread`). `dedup` is an `AsyncDedupStore`:
    `MemoryDedupStore`, or `RedisDedupStore` with a `redis.asyncio` client.

    Graceful shutdown (`stop()`, SIGTERM or SIGINT in `run()`, or `run()` cancelled): no
    new deliveries, running handlers get `shutdown_timeout` seconds to finish (their
    messages are acked as usual), then they are cancelled and everything not finished
    goes back to the queue.

    ```python
    import asyncio
    from scalepatterns.queue import AsyncMemoryBroker, AsyncProducer, AsyncWorker

    async def main() -> None:
        broker = AsyncMemoryBroker()
        done = asyncio.Event()

        async def greet(message) -> None:
            done.set()

        async with AsyncWorker(broker, "greetings", greet):
            await AsyncProducer(broker).publish("greetings", {"name": "Ada"})
            await asyncio.wait_for(done.wait(), 5)
        await broker.close()

    asyncio.run(main())
    ```
    """

    def __init__(
        self,
        broker: AsyncBroker,
        queue: str | QueueSpec,
        handler: Handler,
        *,
        concurrency: int = 4,
        prefetch: int | None = None,
        retry: RetryPolicy | None = None,
        dedup: AsyncDedupStore | None = None,
        dedup_ttl: float = 86_400.0,
        in_progress_ttl: float = 300.0,
        shutdown_timeout: float = 30.0,
        serializer: Serializer | None = None,
        clock: Clock = SYSTEM_CLOCK,
        listeners: Listeners | None = None,
    ) -> None:
        self.settings = WorkerSettings.check(
            queue,
            handler,
            concurrency,
            prefetch,
            retry,
            dedup is not None,
            dedup_ttl,
            in_progress_ttl,
            shutdown_timeout,
            serializer or JsonSerializer(),
            clock,
            listeners or default_listeners,
        )
        if dedup is not None and not (
            is_coroutine_callable(getattr(dedup, "aclaim", None))
            and getattr(dedup, "asynchronous", True)
        ):
            raise ConfigurationError(
                "dedup",
                dedup,
                "an AsyncDedupStore: MemoryDedupStore, or RedisDedupStore with a "
                "redis.asyncio client",
            )
        self.broker = broker
        self.spec = self.settings.spec
        self.queue = self.spec.name
        self.concurrency = self.settings.concurrency
        self.prefetch = self.settings.prefetch
        self.retry = self.settings.retry
        self._dedup = dedup
        self._io = _Awaits(self, _awaitable_handler(handler))
        self._subscription: AsyncSubscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._running = 0
        self._idle: asyncio.Event | None = None
        self._exit: asyncio.Event | None = None
        self.handled = 0
        self.failed = 0

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> AsyncWorker:
        """Declare the topology and start consuming (in tasks of the running loop)."""
        if self._subscription is not None:
            return self
        await self.broker.declare_queue(self.spec)
        inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._exit = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._serve(inbox), name=f"sp-worker {self.queue} #{n}")
            for n in range(self.concurrency)
        ]
        try:
            self._subscription = await self.broker.consume(
                self.queue, prefetch=self.prefetch, on_delivery=inbox.put_nowait
            )
        except BaseException:
            await self._cancel_tasks()
            raise
        return self

    async def stop(self, timeout: float | None = None) -> bool:
        """Stop consuming, let running handlers finish for up to `timeout` seconds, then
        cancel the rest: their messages go back to the queue. Returns True if everything
        in flight finished."""
        subscription, self._subscription = self._subscription, None
        if subscription is None:
            return True
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        self._stopping = True
        if self._exit is not None:
            self._exit.set()
        await subscription.cancel()
        finished = True
        if self._idle is not None and not self._idle.is_set():
            try:
                await within(self._idle.wait(), timeout)
            except asyncio.TimeoutError:
                finished = False
        await self._cancel_tasks()
        await subscription.close()
        return finished

    async def _cancel_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run(self) -> None:
        """Consume until SIGTERM or SIGINT, `stop()`, or until this call is cancelled;
        then stop gracefully (also when cancelled)."""
        await self.start()
        restore = _on_signals(self._exit.set if self._exit is not None else lambda: None)
        try:
            if self._exit is not None:
                await self._exit.wait()
        finally:
            restore()
            await asyncio.shield(self.stop())

    async def __aenter__(self) -> AsyncWorker:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def in_flight(self) -> int:
        """Handlers running now."""
        return self._running

    # -- one message --------------------------------------------------------------------

    async def _serve(self, inbox: asyncio.Queue[Delivery]) -> None:
        while True:
            delivery = await inbox.get()
            if self._stopping:
                continue  # not started: goes back to the queue when the subscription closes
            self._running += 1
            if self._idle is not None:
                self._idle.clear()
            try:
                await self._process(delivery)
            finally:
                self._running -= 1
                if self._running == 0 and self._idle is not None:
                    self._idle.set()

    async def _process(self, delivery: Delivery) -> None:
        try:
            outcome = await adrive(handle(delivery, self.settings, self._io))
        except asyncio.CancelledError:
            delivery.reject(requeue=True)  # a cancelled handler's message goes back
            raise
        except Exception:  # noqa: BLE001 - a worker task must survive anything
            _log.exception(
                "worker on %s could not settle a message (a retry or dead-letter publish "
                "failed); giving it back to the queue",
                self.queue,
            )
            try:  # a pause keeps a lasting refusal from spinning
                await asyncio.sleep(_GIVE_BACK_PAUSE)
            finally:
                with contextlib.suppress(Exception):
                    delivery.reject(requeue=True)
            return
        if outcome is True:
            self.handled += 1
        elif outcome is False:
            self.failed += 1

    def __repr__(self) -> str:
        return (
            f"AsyncWorker(queue={self.queue!r}, concurrency={self.concurrency}, "
            f"prefetch={self.prefetch})"
        )


def _on_signals(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` on SIGTERM and SIGINT while the returned function is not called.

    Only in the main thread (elsewhere signals cannot be caught); the previous handlers
    come back afterwards.
    """
    loop = asyncio.get_running_loop()
    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            before = signal.getsignal(sig)
            loop.add_signal_handler(sig, callback)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            continue
        previous[sig] = before

    def restore() -> None:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)

    return restore
