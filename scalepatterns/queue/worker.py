"""`Worker`: consume a queue, run a handler, ack after it returned, retry, dead-letter."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from scalepatterns._coroutines import is_coroutine_callable, run_awaitable
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import ConfigurationError, SerializationError
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.queue.broker import (
    Broker,
    Delivery,
    Outgoing,
    QueueSpec,
    Subscription,
)
from scalepatterns.queue.dedup import Claim, DedupStore
from scalepatterns.queue.events import (
    MessageDeadLettered,
    MessageDuplicate,
    MessageHandled,
    MessageRetried,
)
from scalepatterns.queue.message import ATTEMPT_HEADER, Message, decode, new_id
from scalepatterns.queue.retry import DeadLetter, Retry, RetryPolicy
from scalepatterns.serializers import JsonSerializer, Serializer

__all__ = [
    "ERROR_MESSAGE_HEADER",
    "ERROR_TYPE_HEADER",
    "FAILED_AT_HEADER",
    "Handler",
    "ORIGINAL_QUEUE_HEADER",
    "Worker",
]

_log = logging.getLogger("scalepatterns.queue")
# Seconds a worker waits before giving back a message it could not settle.
_GIVE_BACK_PAUSE = 1.0

Handler = Callable[[Message], Any]
"""A handler takes a `Message`; it may be an ``async def``."""

ERROR_TYPE_HEADER = "x-sp-error-type"
ERROR_MESSAGE_HEADER = "x-sp-error-message"
FAILED_AT_HEADER = "x-sp-failed-at"
ORIGINAL_QUEUE_HEADER = "x-sp-original-queue"


class Worker:
    """Consumes `queue` and runs `handler` for each message on a thread pool.

    The handler runs off the broker's I/O thread (heartbeats continue during long
    handlers); the message is acked after it returned. A failing handler's message is
    published to a delay queue and comes back after the retry policy's backoff; after
    the last attempt (or for `Reject` and non-retried errors) it goes to the dead-letter
    queue ``<queue>.dead`` with headers ``x-sp-error-type``, ``x-sp-error-message`` and
    ``x-sp-attempt``. An undecodable message goes there at once.

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
        if not callable(handler):
            raise TypeError(f"handler must be a callable taking a Message, not {handler!r}")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError("concurrency", concurrency, "an int >= 1")
        if prefetch is not None and (
            isinstance(prefetch, bool)
            or not isinstance(prefetch, int)
            or not 1 <= prefetch <= 65535
        ):  # AMQP's prefetch-count is 16 bits
            raise ConfigurationError("prefetch", prefetch, "an int in 1..65535, or None")
        for name, value in (("dedup_ttl", dedup_ttl), ("in_progress_ttl", in_progress_ttl)):
            if value <= 0:
                raise ConfigurationError(name, value, "seconds > 0")
        if shutdown_timeout < 0:
            raise ConfigurationError("shutdown_timeout", shutdown_timeout, "seconds >= 0")
        self.broker = broker
        self.spec = queue if isinstance(queue, QueueSpec) else QueueSpec(queue)
        self.queue = self.spec.name
        self._handler = handler
        self._is_async = is_coroutine_callable(handler)
        self.concurrency = concurrency
        self.prefetch = prefetch or 2 * concurrency
        self.retry = retry or RetryPolicy()
        self._dedup = dedup
        self._dedup_ttl = dedup_ttl
        self._in_progress_ttl = in_progress_ttl
        self._shutdown_timeout = shutdown_timeout
        self._serializer = serializer or JsonSerializer()
        self._clock = clock
        self._listeners = listeners or default_listeners
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
        timeout = self._shutdown_timeout if timeout is None else timeout
        subscription, executor = self._subscription, self._executor
        if subscription is None or executor is None:
            return True
        self._stopping.set()
        subscription.cancel()
        deadline = self._clock.monotonic() + timeout
        with self._lock:
            while self._in_flight and self._clock.monotonic() < deadline:
                self._lock.wait(timeout=min(0.1, max(0.0, deadline - self._clock.monotonic())))
            finished = self._in_flight == 0
        subscription.close()
        # Queued ones are not cancelled: each returns at once (stopping) and counts itself
        # out of `in_flight`, which a later start() and stop() rely on.
        executor.shutdown(wait=False)
        self._subscription = self._executor = None
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
            self._lock.notify_all()

    def _process(self, delivery: Delivery, stopping: threading.Event) -> None:
        try:
            if stopping.is_set():  # this run stopped before the delivery got a thread:
                return  # it went back to the queue when the subscription closed
            self._handle(delivery)
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

    def _handle(self, delivery: Delivery) -> None:
        try:
            message = decode(
                delivery.body,
                delivery.properties,
                self._serializer,
                routing_key=delivery.routing_key,
                redelivered=delivery.redelivered,
            )
        except SerializationError as exc:
            self._dead_letter(delivery, None, 1, exc)
            return
        dedup = self._dedup if message.has_id else None
        # Marks are per queue: the same event fanned out to two queues is handled by both.
        mark = f"{self.queue}:{message.id}"
        if dedup is not None:
            try:
                claim = dedup.claim(mark, self._in_progress_ttl)
            except Exception as exc:  # noqa: BLE001 - any dedup-store failure: try the message again later
                _log.warning("dedup store failed on %s (%s); retrying later", self.queue, exc)
                self._requeue_later(delivery, message, 1.0, message.attempt)
                return
            if claim is Claim.DONE:
                delivery.ack()
                if self._listeners.active:
                    self._listeners.emit(MessageDuplicate(source=self.queue))
                return
            if claim is Claim.BUSY:
                # Another worker holds it, or died holding it: look again later.
                self._requeue_later(
                    delivery, message, min(self._in_progress_ttl, 5.0), message.attempt
                )
                return
        started = self._clock.monotonic()
        try:
            self._call(message)
        except Exception as exc:  # noqa: BLE001 - any handler error is retried or dead-lettered by policy
            with self._lock:
                self.failed += 1
            if dedup is not None:
                with contextlib.suppress(Exception):
                    dedup.release(mark)
            try:
                decision = self.retry.decide(message.attempt, exc)
            except Exception as policy_error:  # noqa: BLE001 - a broken policy dead-letters, never loops
                decision = DeadLetter(f"the retry policy failed: {policy_error!r}")
            if isinstance(decision, Retry):
                self._requeue_later(delivery, message, decision.delay, message.attempt + 1)
                if self._listeners.active:
                    self._listeners.emit(
                        MessageRetried(
                            source=self.queue,
                            attempt=message.attempt + 1,
                            delay=decision.delay,
                            error=type(exc).__name__,
                        )
                    )
            else:
                self._dead_letter(delivery, message, message.attempt, exc, decision)
            return
        if dedup is not None:
            try:
                dedup.complete(mark, self._dedup_ttl)
            except Exception as exc:  # noqa: BLE001 - the effect happened: ack it regardless
                _log.warning("dedup store could not mark %s done: %s", message.id, exc)
        delivery.ack()
        with self._lock:
            self.handled += 1
        if self._listeners.active:
            self._listeners.emit(
                MessageHandled(
                    source=self.queue,
                    attempt=message.attempt,
                    seconds=self._clock.monotonic() - started,
                )
            )

    def _call(self, message: Message) -> None:
        if not self._is_async:
            self._handler(message)
            return
        run_awaitable(self._handler(message))

    def _republish(self, delivery: Delivery, target: str, headers: dict[str, Any]) -> None:
        props = delivery.properties
        merged = dict(props.headers or {})
        merged.update(headers)
        new_props = dataclasses.replace(
            props, headers=merged, message_id=props.message_id or new_id()
        )
        self.broker.publish([Outgoing("", target, delivery.body, new_props)], timeout=30.0)

    def _requeue_later(
        self, delivery: Delivery, message: Message, delay: float, attempt: int
    ) -> None:
        target = self.broker.declare_delay(self.queue, delay)
        self._republish(delivery, target, {ATTEMPT_HEADER: attempt})
        delivery.ack()

    def _dead_letter(
        self,
        delivery: Delivery,
        message: Message | None,
        attempt: int,
        error: BaseException,
        decision: DeadLetter | None = None,
    ) -> None:
        headers = {
            ERROR_TYPE_HEADER: type(error).__name__,
            ERROR_MESSAGE_HEADER: str(error)[:1000],
            ATTEMPT_HEADER: attempt,
            FAILED_AT_HEADER: int(self._clock.time() * 1000),
            ORIGINAL_QUEUE_HEADER: self.queue,
        }
        self._republish(delivery, self.spec.dead_letter, headers)
        delivery.ack()
        _log.warning(
            "message %s on %s dead-lettered after %d attempt(s): %s: %s",
            message.id if message else delivery.properties.message_id,
            self.queue,
            attempt,
            type(error).__name__,
            decision.reason if decision else error,
        )
        if self._listeners.active:
            self._listeners.emit(
                MessageDeadLettered(source=self.queue, attempt=attempt, error=type(error).__name__)
            )

    def __repr__(self) -> str:
        return (
            f"Worker(queue={self.queue!r}, concurrency={self.concurrency}, "
            f"prefetch={self.prefetch})"
        )
