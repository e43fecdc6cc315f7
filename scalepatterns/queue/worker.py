"""`Worker`: consume a queue, run a handler on threads, ack after it returned, retry,
dead-letter (the steps themselves are in `handling.py`, shared with `AsyncWorker`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import logging
import signal
import threading
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from scalepatterns._steps import drive
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.queue.broker import Broker, Delivery, Outgoing, QueueSpec, Subscription
from scalepatterns.queue.dedup import Claim, DedupStore
from scalepatterns.queue.handling import Handler, WorkerSettings, handle
from scalepatterns.queue.message import Message
from scalepatterns.queue.retry import RetryPolicy
from scalepatterns.serializers import JsonSerializer, Serializer

__all__ = ["Handler", "Worker"]

_log = logging.getLogger("scalepatterns.queue")
# Seconds a worker waits before giving back a message it could not settle.
_GIVE_BACK_PAUSE = 1.0


class _HandlerLoop:
    """One event loop on a thread of its own, for the `async def` handlers of one worker:
    they share it (and the async clients they create) across messages."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def run(self, awaitable: Awaitable[Any]) -> Any:
        """Run `awaitable` on the loop and wait for its result (from a handler thread).

        It runs in a copy of the calling thread's context, and the context variables it
        sets are set in the calling thread afterwards, as if it had run there.
        """
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="sp-worker-loop", daemon=True
                )
                self._thread.start()
            loop = self._loop
        caller = contextvars.copy_context()
        outcome: concurrent.futures.Future[tuple[Any, contextvars.Context]] = (
            concurrent.futures.Future()
        )

        async def run_and_keep_context() -> tuple[Any, contextvars.Context]:
            return await awaitable, contextvars.copy_context()

        def start() -> None:
            task = caller.run(loop.create_task, run_and_keep_context())
            task.add_done_callback(functools.partial(_settle, outcome))

        loop.call_soon_threadsafe(start)
        result, after = outcome.result()
        for variable, value in after.items():
            variable.set(value)
        return result

    def close(self) -> None:
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()


def _settle(outcome: concurrent.futures.Future[Any], task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        outcome.cancel()
    elif (error := task.exception()) is not None:
        outcome.set_exception(error)
    else:
        outcome.set_result(task.result())


class _Calls:
    """The I/O of `handle`, as plain calls."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def claim(self, mark: str, ttl: float) -> Claim:
        assert self._worker._dedup is not None  # asked only with a store
        return self._worker._dedup.claim(mark, ttl)

    def complete(self, mark: str, ttl: float) -> None:
        assert self._worker._dedup is not None
        self._worker._dedup.complete(mark, ttl)

    def release(self, mark: str) -> None:
        assert self._worker._dedup is not None
        self._worker._dedup.release(mark)

    def call(self, message: Message) -> None:
        result = self._worker._handler(message)
        if inspect.isawaitable(result):
            self._worker._loop.run(result)

    def declare_delay(self, delay: float) -> str:
        return self._worker.broker.declare_delay(self._worker.queue, delay)

    def publish(self, message: Outgoing) -> None:
        self._worker.broker.publish([message], timeout=30.0)


class Worker:
    """Consumes `queue` and runs `handler` for each message on a thread pool.

    The handler runs off the broker's I/O thread (heartbeats continue during long
    handlers); the message is acked after it returned. A failing handler's message is
    published to a delay queue and comes back after the retry policy's backoff; after
    the last attempt (or for `Reject` and non-retried errors) it goes to the dead-letter
    queue ``<queue>.dead`` with headers ``x-sp-error-type``, ``x-sp-error-message`` and
    ``x-sp-attempt``. An undecodable message goes there at once. An ``async def`` handler
    runs on one event loop the worker keeps on a thread of its own, so its async clients
    live across messages.

    Args:
        broker: the broker.
        queue: the queue name, or a `QueueSpec` (declared on `start`).
        handler: called with each `Message`; sync or ``async def``.
        concurrency: handler threads.
        prefetch: unacked messages the broker hands over at once (default 2x concurrency).
        retry: a `RetryPolicy` (default: 5 tries, exponential backoff with jitter).
        dedup: a `DedupStore` to make redeliveries have their effect once.
        dedup_ttl: how long a handled id is remembered (seconds).
        in_progress_ttl: how long an in-progress mark holds off a redelivery (seconds);
            longer than your slowest handler.
        shutdown_timeout: `stop()` waits this long for running handlers, then gives the
            rest back to the queue.

    ```python
    import threading
    from scalepatterns.queue import MemoryBroker, Producer, Worker

    broker = MemoryBroker()
    done = threading.Event()
    worker = Worker(broker, "greetings", lambda message: done.set())
    with worker:  # start() ... stop()
        Producer(broker).publish("greetings", {"name": "Ada"})
        assert done.wait(5)
    broker.close()
    ```
    """

    def __init__(
        self,
        broker: Broker,
        queue: str | QueueSpec,
        handler: Handler,
        *,
        concurrency: int = 4,
        prefetch: int | None = None,
        retry: RetryPolicy | None = None,
        dedup: DedupStore | None = None,
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
        if getattr(dedup, "asynchronous", False):
            raise ConfigurationError(
                "dedup", dedup, "a DedupStore with sync methods (a sync redis client)"
            )
        self.broker = broker
        self.spec = self.settings.spec
        self.queue = self.spec.name
        self.concurrency = self.settings.concurrency
        self.prefetch = self.settings.prefetch
        self.retry = self.settings.retry
        self._handler = handler
        self._dedup = dedup
        self._calls = _Calls(self)
        self._loop = _HandlerLoop()
        self._lock = threading.Condition()
        self._in_flight = 0
        self._executor: ThreadPoolExecutor | None = None
        self._subscription: Subscription | None = None
        self._stopping = threading.Event()
        self.handled = 0
        self.failed = 0

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Worker:
        """Declare the topology and start consuming in the background."""
        if self._executor is not None:
            return self
        # A new event per run: deliveries still queued in the previous run's pool see that
        # run's event set and return, even though this run has started.
        self._stopping = threading.Event()
        self.broker.declare_queue(self.spec)
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="sp-worker")
        try:
            self._subscription = self.broker.consume(
                self.queue, prefetch=self.prefetch, on_delivery=self._on_delivery
            )
        except BaseException:
            # Not started: free the pool, and let a later start() try again.
            executor, self._executor = self._executor, None
            executor.shutdown(wait=False)
            raise
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Stop consuming, let running handlers finish for up to `timeout` seconds, close.

        Messages not settled by then go back to the queue (redelivered to another
        worker). Returns True if everything in flight finished.
        """
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        subscription, executor = self._subscription, self._executor
        if subscription is None or executor is None:
            return True
        clock = self.settings.clock
        self._stopping.set()
        subscription.cancel()
        deadline = clock.monotonic() + timeout
        with self._lock:
            while self._in_flight and clock.monotonic() < deadline:
                self._lock.wait(timeout=min(0.1, max(0.0, deadline - clock.monotonic())))
            finished = self._in_flight == 0
        subscription.close()
        # Queued ones are not cancelled: each returns at once (stopping) and counts itself
        # out of `in_flight`, which a later start() and stop() rely on.
        executor.shutdown(wait=False)
        self._subscription = self._executor = None
        if finished:
            self._loop.close()  # else the last handler to finish closes it
        return finished

    def run(self) -> None:
        """Consume until SIGTERM or SIGINT (or `stop()` from another thread), then stop."""
        stop = threading.Event()
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda *_: stop.set())
        self.start()
        try:
            while not stop.is_set() and not self._stopping.is_set():
                stop.wait(0.2)
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # -- one message --------------------------------------------------------------------

    def _on_delivery(self, delivery: Delivery) -> None:
        executor = self._executor
        if executor is None or self._stopping.is_set():
            return  # not settled: goes back to the queue when the subscription closes
        with self._lock:
            self._in_flight += 1
        try:
            executor.submit(self._process, delivery, self._stopping)
        except RuntimeError:  # the executor shut down meanwhile
            self._done()

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1
            idle = self._in_flight == 0
            self._lock.notify_all()
        if idle and self._executor is None:  # the last handler of a stopped run
            self._loop.close()

    def _process(self, delivery: Delivery, stopping: threading.Event) -> None:
        try:
            if stopping.is_set():  # this run stopped before the delivery got a thread:
                return  # it went back to the queue when the subscription closed
            outcome = drive(handle(delivery, self.settings, self._calls))
            if outcome is not None:
                with self._lock:
                    if outcome:
                        self.handled += 1
                    else:
                        self.failed += 1
        except Exception:  # noqa: BLE001 - a worker thread must survive anything
            _log.exception(
                "worker on %s could not settle a message (a retry or dead-letter publish "
                "failed); giving it back to the queue",
                self.queue,
            )
            self._give_back(delivery)
        finally:
            self._done()

    def _give_back(self, delivery: Delivery) -> None:
        """Requeue an unsettled delivery after a pause, rather than hold its prefetch slot
        until the channel closes; the pause keeps a lasting refusal from spinning."""
        self._stopping.wait(_GIVE_BACK_PAUSE)
        with contextlib.suppress(Exception):  # settled already, or the channel is gone:
            delivery.reject(requeue=True)  # the broker redelivers it either way

    def __repr__(self) -> str:
        return (
            f"Worker(queue={self.queue!r}, concurrency={self.concurrency}, "
            f"prefetch={self.prefetch})"
        )
