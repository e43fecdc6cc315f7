"""`RabbitMQBroker`: the `Broker` Protocol over pika, with one I/O thread per broker.

pika's `BlockingConnection` waits a network round trip for every publisher confirm, so
this broker runs a `SelectConnection` on an I/O thread of its own instead: publishing
hands a whole batch to that thread and the caller wakes when its last message is settled.
Consumers receive deliveries on the I/O thread and hand them to the worker's pool at
once; acks come back in batches, so heartbeats keep flowing during long handlers.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, cast

from scalepatterns.errors import BackendUnavailable, DeadlineExceeded
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.queue.broker import Delivery, Outgoing, QueueSpec
from scalepatterns.queue.errors import BrokerBlocked, ConnectionLost
from scalepatterns.queue.rabbitmq import topology
from scalepatterns.queue.rabbitmq.confirms import Batch, ConfirmWait, raise_for_outcome
from scalepatterns.queue.rabbitmq.consumer import Consumer, RabbitDelivery
from scalepatterns.queue.rabbitmq.frames import batching
from scalepatterns.queue.rabbitmq.link import Link, NotFound, Op
from scalepatterns.queue.rabbitmq.settings import DEFAULT_URL, BrokerSettings

__all__ = ["RabbitMQBroker"]

_log = logging.getLogger("scalepatterns.queue.rabbitmq")


class _Result:
    """A one-shot result set on the I/O thread and waited for by a caller."""

    __slots__ = ("_event", "error", "value")

    def __init__(self) -> None:
        self._event = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def set(self, value: Any = None) -> None:
        if not self._event.is_set():
            self.value = value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        if not self._event.is_set():
            self.error = error
            self._event.set()

    def wait(self, timeout: float, what: str) -> Any:
        if not self._event.wait(timeout):
            raise DeadlineExceeded(timeout, what)
        if self.error is not None:
            raise self.error
        return self.value


class _IOThread:
    """pika's IOLoop on a daemon thread: the `EventLoop` the sync broker's link runs on."""

    def __init__(self, pika: ModuleType) -> None:
        self._connection_class = batching(pika.SelectConnection)
        self.ioloop = pika.adapters.select_connection.IOLoop()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.stopped = False

    def start(self, first: Callable[[], None]) -> None:
        with self._lock:
            if self.stopped:
                raise BackendUnavailable("rabbitmq", "the broker was closed")
            if self._thread is not None:
                return
            self.ioloop.add_callback_threadsafe(first)
            self._thread = threading.Thread(target=self._run, name="sp-rabbitmq-io", daemon=True)
            self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def _run(self) -> None:
        while not self.stopped:
            try:
                self.ioloop.start()
            except Exception:  # noqa: BLE001, PERF203 - the I/O thread must survive anything
                _log.exception("a callback on the rabbitmq I/O thread failed")
        self.ioloop.close()

    def stop(self) -> None:
        """Stop the loop; waits for the thread unless called on it."""
        with self._lock:
            if self.stopped:
                return
            self.stopped = True
            thread = self._thread
        if thread is None:
            self.ioloop.close()
            return
        self.ioloop.add_callback_threadsafe(self.ioloop.stop)
        if thread is not threading.current_thread():
            thread.join(timeout=10)

    # the EventLoop protocol
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
            custom_ioloop=self.ioloop,
        )

    def call_later(self, delay: float, fn: Callable[[], None]) -> Callable[[], None]:
        handle = self.ioloop.call_later(delay, fn)
        return lambda: self.ioloop.remove_timeout(handle)

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        if self.stopped:
            raise RuntimeError("the I/O loop is stopped")
        self.ioloop.add_callback_threadsafe(fn)

    def new_flag(self) -> threading.Event:
        return threading.Event()


def _shutdown(io: _IOThread, link: Link) -> None:
    """Close the connection and stop the I/O thread (also when the broker is dropped)."""
    if io.started and not io.stopped:
        closed = threading.Event()
        with contextlib.suppress(RuntimeError):
            io.call_soon_threadsafe(lambda: link.close(closed.set))
            closed.wait(10)
    io.stop()


class _Subscription:
    def __init__(self, broker: RabbitMQBroker, consumer: Consumer) -> None:
        self._broker = broker
        self._consumer = consumer

    def cancel(self) -> None:
        self._broker._end(self._consumer.cancel, "basic.cancel")

    def close(self) -> None:
        self._broker._end(self._consumer.close, "channel.close")


class RabbitMQBroker:
    """A `Broker` on RabbitMQ (pika `SelectConnection` on a private I/O thread).

    Args:
        url: ``amqp://user:password@host:port/vhost``; for a cluster, every node: a list
            of URLs, URLs separated by commas, or one URL listing the hosts
            (``amqp://u:p@h1:5672,h2:5672/vhost``). A lost connection moves to the next.
        heartbeat: AMQP heartbeat, seconds.
        connect_timeout: seconds a caller waits for a (re)connection before failing
            with `ConnectionLost`.
        blocked_timeout: when the broker blocks publishers (``connection.blocked``:
            memory or disk alarm), `publish` waits this long for it to lift, then raises
            `BrokerBlocked`. 0 raises at once.
        reconnect_max_delay: cap of the exponential backoff between reconnection tries.
        window: most unconfirmed messages in flight per publish call (bounds memory).

    Wrong credentials or a missing vhost raise `BrokerRefused` at once, and again on
    every call: they are never retried. pika is imported when the broker is constructed
    (``pip install 'scalepatterns[rabbitmq]'``).
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
        pika = self._settings.load_pika("RabbitMQBroker")
        self.url = self._settings.describe()
        self._io = _IOThread(pika)
        self._link = Link(
            pika,
            self._settings.parameters(pika),
            self._settings.urls,
            self._io,
            reconnect_max_delay=reconnect_max_delay,
            listeners=self._settings.listeners,
        )
        self._ready = cast(threading.Event, self._link.ready)
        self._unblocked = cast(threading.Event, self._link.unblocked)
        self._get_lock = threading.Lock()
        self._close = weakref.finalize(self, _shutdown, self._io, self._link)

    @property
    def connections(self) -> int:
        """Connections opened so far (1 + reconnections)."""
        return self._link.connections

    # -- waiting for the I/O thread ---------------------------------------------------

    def _wait_ready(self, timeout: float) -> None:
        self._io.start(self._link.connect)
        if not self._ready.wait(timeout):
            error = self._link.connection_error
            raise ConnectionLost(
                f"not connected to {self._link.url} after {timeout:.1f}s"
                + (f": {error}" if error else "")
            )
        if self._link.refused is not None:
            raise self._link.refused

    def _on_io(self, fn: Callable[[], None]) -> None:
        try:
            self._io.call_soon_threadsafe(fn)
        except RuntimeError as exc:
            raise BackendUnavailable("rabbitmq", "the broker was closed") from exc

    def _call(self, op: Op, what: str, timeout: float = 30.0) -> Any:
        """Run `op(ok, fail)` on the I/O thread and wait for its result."""
        self._wait_ready(min(timeout, self._settings.connect_timeout))
        result = _Result()
        self._on_io(lambda: self._link.run(op, result.set, result.fail, what))
        return result.wait(timeout, what)

    def _end(self, op: Op, what: str) -> None:
        """Cancel or close a consumer; with no connection there is nothing to stop."""
        with contextlib.suppress(BackendUnavailable, DeadlineExceeded):
            if not self._ready.is_set() or self._link.refused is not None:
                self._on_io(lambda: op(lambda _v: None, lambda _e: None))
            else:
                self._call(op, what, 10.0)

    # -- topology ---------------------------------------------------------------------

    def declare_queue(self, spec: QueueSpec) -> None:
        self._call(functools.partial(topology.declare_queue, self._link, spec), spec.name)

    def ensure_queue(self, name: str) -> None:
        self._call(functools.partial(topology.ensure_queue, self._link, name), name)

    def declare_delay(self, queue: str, delay: float) -> str:
        name: str = self._call(
            functools.partial(topology.declare_delay, self._link, queue, delay), queue
        )
        return name

    def declare_exchange(self, name: str) -> None:
        self._call(functools.partial(topology.declare_exchange, self._link, name), name)

    def bind(self, exchange: str, queue: str, pattern: str) -> None:
        self._call(functools.partial(topology.bind, self._link, exchange, queue, pattern), queue)

    def delete_queue(self, name: str) -> None:
        self._call(functools.partial(topology.delete_queue, self._link, name), name)

    def delete_exchange(self, name: str) -> None:
        self._call(functools.partial(topology.delete_exchange, self._link, name), name)

    def depth(self, queue: str) -> int:
        count: int = self._call(functools.partial(topology.depth, self._link, queue), queue)
        return count

    # -- publishing -------------------------------------------------------------------

    def publish(self, messages: Sequence[Outgoing], *, timeout: float = 30.0) -> None:
        if not messages:
            return
        wait = ConfirmWait(timeout, self._settings.blocked_timeout, time.monotonic())
        if not self._unblocked.wait(self._settings.blocked_timeout):
            raise BrokerBlocked(self._link.blocked_reason, self._settings.blocked_timeout)
        self._wait_ready(min(timeout, self._settings.connect_timeout))
        window = self._settings.window
        batches = []
        for start in range(0, len(messages), window):
            chunk = messages[start : start + window]
            done = threading.Event()
            batch = Batch([m.properties.message_id or "" for m in chunk], done.set)
            self._link.track(batch)
            try:
                try:
                    self._on_io(functools.partial(self._link.publish, chunk, batch))
                except BackendUnavailable:
                    batch.lose_rest()
                while not done.wait(0.05):
                    wait.check(
                        time.monotonic(),
                        blocked=not self._unblocked.is_set(),
                        reason=self._link.blocked_reason,
                    )
            finally:
                self._link.untrack(batch)
            batches.append(batch)
        raise_for_outcome(batches, messages[0].exchange or messages[0].routing_key, self.url)

    # -- consuming --------------------------------------------------------------------

    def consume(
        self, queue: str, *, prefetch: int, on_delivery: Callable[[Delivery], None]
    ) -> _Subscription:
        consumer = Consumer(self._link, queue, prefetch, on_delivery)
        self._link.add_consumer(consumer)
        try:
            self._call(consumer.start, f"consuming {queue!r}")
        except BaseException:
            with contextlib.suppress(BackendUnavailable):  # or it could consume unseen
                self._on_io(lambda: consumer.close(lambda _v: None, lambda _e: None))
            raise
        return _Subscription(self, consumer)

    def get(self, queue: str) -> Delivery | None:
        # One basic.get at a time on the shared get channel: AMQP allows no second one
        # while a first is pending (pika raises), so callers from other threads take turns.
        with self._get_lock:
            try:
                delivery: Delivery | None = self._call(
                    functools.partial(self._link.basic_get, queue, RabbitDelivery),
                    f"basic.get on {queue!r}",
                )
            except NotFound:
                return None
            except DeadlineExceeded:
                with contextlib.suppress(BackendUnavailable):
                    self._on_io(self._link.close_get_channel)
                raise
        return delivery

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection and stop the I/O thread."""
        self._close()

    def __enter__(self) -> RabbitMQBroker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RabbitMQBroker({self.url!r})"
