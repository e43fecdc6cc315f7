"""`RabbitMQBroker`: the `Broker` Protocol over pika, with one I/O thread per broker.

pika's `BlockingConnection` waits a network round trip for every publisher confirm, so
this adapter runs a `SelectConnection` on its own thread instead: publishing hands a
whole batch to that thread, confirms are tracked by delivery tag (acks and nacks,
``multiple`` included, and ``basic.return`` for unroutable mandatory messages), and the
caller wakes when its last message is settled. Consumers receive deliveries on the I/O
thread and hand them to the worker's pool at once; acks come back in batches through
``add_callback_threadsafe``, so heartbeats keep flowing during long handlers.

When the connection drops the thread reconnects with exponential backoff and reopens
every consumer. Unconfirmed publishes fail with `ConnectionLost` (the producer publishes
them again); unacked deliveries are redelivered by the broker; acks for deliveries of
the dead connection are dropped (their redeliveries are absorbed by a dedup store).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from scalepatterns._deps import require
from scalepatterns.errors import BackendUnavailable, ConfigurationError, DeadlineExceeded
from scalepatterns.events import Listeners, default_listeners
from scalepatterns.queue.broker import (
    Delivery,
    Outgoing,
    Properties,
    QueueSpec,
    delay_queue,
    delay_queue_arguments,
)
from scalepatterns.queue.errors import (
    BrokerBlocked,
    ConnectionLost,
    PublishError,
    TopologyConflict,
)
from scalepatterns.queue.events import Reconnected

__all__ = ["RabbitMQBroker"]

_log = logging.getLogger("scalepatterns.queue.rabbitmq")
_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)'")


class _NotFound(Exception):
    pass


class _Result:
    """A one-shot result set from the I/O thread and waited for by a caller."""

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

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float, what: str) -> Any:
        if not self._event.wait(timeout):
            raise DeadlineExceeded(timeout, what)
        if self.error is not None:
            raise self.error
        return self.value


class _Batch:
    """One publish call: settled when every message was acked, nacked or lost."""

    __slots__ = ("_lock", "done", "failed", "ids", "lost", "remaining", "settled")

    def __init__(self, ids: list[str]) -> None:
        count = len(ids)
        self._lock = threading.Lock()
        self.ids = ids
        self.settled: Counter[str] = Counter()
        self.remaining = count
        self.failed: dict[str, str] = {}
        self.lost: list[str] = []
        self.done = threading.Event()
        if count == 0:
            self.done.set()

    def settle(self, message_id: str, error: str | None = None, *, lost: bool = False) -> None:
        with self._lock:
            if self.remaining <= 0:
                return
            self.settled[message_id] += 1
            if lost:
                self.lost.append(message_id)
            elif error is not None:
                self.failed[message_id] = error
            self.remaining -= 1
            if self.remaining <= 0:
                self.done.set()

    def lose_rest(self) -> None:
        """The connection died: whatever was not settled yet is lost."""
        with self._lock:
            if self.remaining <= 0:
                return
            unsettled = Counter(self.ids) - self.settled
            self.lost.extend(unsettled.elements())
            self.remaining = 0
            self.done.set()


class _RabbitDelivery:
    __slots__ = (
        "_broker",
        "_channel",
        "_settle_lock",
        "_settled",
        "_tag",
        "body",
        "properties",
        "redelivered",
        "routing_key",
    )

    def __init__(  # noqa: PLR0917 - built in one place, from pika's callback arguments
        self,
        broker: RabbitMQBroker,
        channel: Any,
        tag: int,
        body: bytes,
        properties: Properties,
        routing_key: str,
        redelivered: bool,
    ) -> None:
        self._broker = broker
        self._channel = channel
        self._tag = tag
        self._settle_lock = threading.Lock()
        self.body = body
        self.properties = properties
        self.routing_key = routing_key
        self.redelivered = redelivered
        self._settled = False

    def ack(self) -> None:
        self._settle(None)

    def reject(self, *, requeue: bool) -> None:
        self._settle(requeue)

    def _settle(self, requeue: bool | None) -> None:
        # Settling a tag twice is a channel error in RabbitMQ that would close the channel
        # under every other delivery on it: only the first settlement goes out.
        with self._settle_lock:  # settling is safe from any thread (the Delivery contract)
            if self._settled:
                return
            self._settled = True
        self._broker._settle(self._channel, self._tag, requeue)


_REOPEN_FIRST_DELAY = 1.0
_SERVED = 5.0  # seconds a connection must last for the reconnect backoff to start over


class _RabbitSubscription:
    def __init__(
        self,
        broker: RabbitMQBroker,
        queue: str,
        prefetch: int,
        on_delivery: Callable[[Delivery], None],
    ) -> None:
        self._broker = broker
        self.queue = queue
        self.prefetch = prefetch
        self.on_delivery = on_delivery
        self.channel: Any = None
        self.consumer_tag: str | None = None
        self.active = True
        self.started = _Result()
        self._reopen_delay = _REOPEN_FIRST_DELAY

    # I/O thread
    def open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel: Any) -> None:
        if not self.active:
            channel.close()
            return
        self.channel = channel
        channel.add_on_close_callback(self._on_closed)
        channel.add_on_cancel_callback(self._on_broker_cancel)
        try:  # an error raised here would escape into pika's I/O loop and drop the connection
            channel.basic_qos(prefetch_count=self.prefetch, callback=lambda _f: self._consume())
        except Exception as exc:  # noqa: BLE001 - this subscription fails, not the connection
            self.active = False
            self.started.fail(BackendUnavailable("rabbitmq", f"consuming {self.queue!r}: {exc}"))
            channel.close()

    def _consume(self) -> None:
        channel = self.channel
        if self.active and channel is not None and channel.is_open:
            self.consumer_tag = channel.basic_consume(
                self.queue, self._on_message, auto_ack=False, callback=self._on_consume_ok
            )

    def _on_broker_cancel(self, _frame: Any) -> None:
        # RabbitMQ cancels consumers when their queue is deleted or a quorum queue's
        # leader moves; consuming again (after a pause) keeps the worker working.
        _log.warning("the broker cancelled the consumer of %s; consuming again in 1s", self.queue)
        connection = self._broker._connection
        if connection is not None and self.active:
            connection.ioloop.call_later(1.0, self._consume)

    def _on_consume_ok(self, _frame: Any) -> None:
        self._reopen_delay = _REOPEN_FIRST_DELAY
        self.started.set()

    def _on_closed(self, channel: Any, reason: Exception) -> None:
        if channel is self.channel:
            self.channel = None
        code = getattr(reason, "reply_code", None)
        if code in (None, 0, 200) or not self.active:
            return
        if not self.started.done:  # never consumed (no such queue...): the caller hears it
            _log.error("consumer channel of %s closed by the broker: %s", self.queue, reason)
            self.started.fail(BackendUnavailable("rabbitmq", f"consuming {self.queue!r}: {reason}"))
            return
        # Consuming already (consumer_timeout, a deleted queue...): the worker keeps its
        # subscription, on a new channel, retried with backoff while the connection lives.
        connection = self._broker._connection
        if connection is None or not connection.is_open:
            return  # the reconnect reopens every active subscription
        delay, self._reopen_delay = self._reopen_delay, min(self._reopen_delay * 2, 30.0)
        _log.warning(
            "consumer channel of %s closed by the broker (%s); consuming again in %.0fs",
            self.queue,
            reason,
            delay,
        )
        connection.ioloop.call_later(delay, lambda: self._reopen(connection))

    def _reopen(self, connection: Any) -> None:
        if self.active and self.channel is None and connection.is_open:
            self.open(connection)

    def _on_message(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        delivery = _RabbitDelivery(
            self._broker,
            channel,
            method.delivery_tag,
            body,
            _from_pika(props),
            method.routing_key,
            method.redelivered,
        )
        try:
            self.on_delivery(delivery)
        except Exception:  # noqa: BLE001 - a consumer's callback must not kill the I/O thread
            _log.exception("on_delivery callback failed for %s", self.queue)

    # caller threads
    def cancel(self) -> None:
        def op(ok: Callable[[Any], None], _fail: Callable[[BaseException], None]) -> None:
            channel, tag = self.channel, self.consumer_tag
            if channel is None or not channel.is_open or tag is None:
                ok(None)
                return
            channel.basic_cancel(tag, callback=lambda _frame: ok(None))

        self.active = False
        self._broker._forget(self)
        # If the connection is gone nothing is being delivered anyway.
        with contextlib.suppress(BackendUnavailable, DeadlineExceeded):
            self._broker._run_op(op, 10.0, "basic.cancel")

    def close(self) -> None:
        def op(ok: Callable[[Any], None], _fail: Callable[[BaseException], None]) -> None:
            channel = self.channel
            self.channel = None
            if channel is not None and channel.is_open:
                channel.close()
            ok(None)

        self.active = False
        self._broker._forget(self)
        with contextlib.suppress(BackendUnavailable, DeadlineExceeded):
            self._broker._run_op(op, 10.0, "channel.close")


def _from_pika(props: Any) -> Properties:
    return Properties(
        message_id=props.message_id,
        type=props.type,
        content_type=props.content_type,
        timestamp=props.timestamp,
        headers=props.headers or {},
        priority=props.priority,
        persistent=props.delivery_mode == 2,
    )


def _culprit(reason: str) -> Callable[[str, int], bool] | None:
    """Which message (by exchange and body size) a broker's channel error was about, when
    its text says: ``no exchange 'x'`` (404), ``access to exchange 'x' ... refused`` (403),
    ``message size N is larger than ...`` (406)."""
    if match := re.search(r"exchange '(.*?)' in vhost", reason):
        name = match[1]
        return lambda exchange, _size: exchange == name
    if match := re.search(r"message size (\d+)", reason):
        too_big = int(match[1])
        return lambda _exchange, size: size == too_big
    return None


def redact(url: str) -> str:
    """`url` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class RabbitMQBroker:
    """A `Broker` on RabbitMQ (pika `SelectConnection` on a private I/O thread).

    Args:
        url: ``amqp://user:password@host:port/vhost``.
        heartbeat: AMQP heartbeat, seconds.
        connect_timeout: seconds a caller waits for a (re)connection before failing
            with `ConnectionLost`.
        blocked_timeout: when the broker blocks publishers (``connection.blocked``:
            memory or disk alarm), `publish` waits this long for it to lift, then raises
            `BrokerBlocked`. 0 raises at once.
        reconnect_max_delay: cap of the exponential backoff between reconnection tries.
        window: most unconfirmed messages in flight per publish call (bounds memory).

    pika is imported when the broker is constructed (``pip install 'scalepatterns[rabbitmq]'``).
    """

    def __init__(
        self,
        url: str = "amqp://guest:guest@127.0.0.1:5672/%2F",
        *,
        heartbeat: int = 30,
        connect_timeout: float = 10.0,
        blocked_timeout: float = 30.0,
        reconnect_max_delay: float = 5.0,
        window: int = 5000,
        listeners: Listeners | None = None,
    ) -> None:
        self._pika = require("pika", extra="rabbitmq", feature="RabbitMQBroker")
        if blocked_timeout < 0:
            raise ConfigurationError("blocked_timeout", blocked_timeout, "seconds >= 0")
        if window < 1:
            raise ConfigurationError("window", window, "an int >= 1")
        self.url = redact(url)
        params = self._pika.URLParameters(url)
        params.heartbeat = heartbeat
        params.socket_timeout = connect_timeout
        params.stack_timeout = connect_timeout
        params.connection_attempts = 1
        params.blocked_connection_timeout = None  # we surface blocking ourselves
        self._params = params
        self._connect_timeout = connect_timeout
        self._blocked_timeout = blocked_timeout
        self._reconnect_max_delay = reconnect_max_delay
        self._window = window
        self._listeners = listeners or default_listeners

        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._unblocked = threading.Event()
        self._unblocked.set()
        self._blocked_reason = ""
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: Any = None
        self._connection_error: str = ""
        self._pub_channel: Any = None
        # delivery tag: (batch, message id, exchange, body size)
        self._pending: dict[int, tuple[_Batch, str, str, int]] = {}
        self._tags_by_id: dict[str, deque[int]] = {}
        self._returned: dict[int, str] = {}
        self._next_tag = 0
        self._subscriptions: list[_RabbitSubscription] = []
        self._outstanding: set[_Result] = set()
        self._batches: set[_Batch] = set()
        self._settles: list[tuple[Any, int, bool | None]] = []
        self._settle_scheduled = False
        self._get_channel: Any = None
        self._get_lock = threading.Lock()
        self._get_waiter: tuple[Callable[[BaseException], None], str] = (lambda _exc: None, "")
        self._known_queues: set[str] = set()
        self._delays: dict[str, float] = {}  # delay queue -> when it was last declared
        self.connections = 0

    # -- the I/O thread -----------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._closing.is_set():
                raise BackendUnavailable("rabbitmq", "the broker was closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sp-rabbitmq-io", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        failures = 0
        while not self._closing.is_set():
            opened = self.connections
            try:
                connection = self._pika.SelectConnection(
                    self._params,
                    on_open_callback=self._on_open,
                    on_open_error_callback=self._on_open_error,
                    on_close_callback=self._on_close,
                )
            except Exception as exc:  # noqa: BLE001 - the I/O thread must survive anything and reconnect
                _log.warning("cannot create a connection to %s: %s", self.url, exc)
                connection = None
            started = time.monotonic()
            if connection is not None:
                self._connection = connection
                try:
                    connection.ioloop.start()
                except Exception:  # noqa: BLE001 - the I/O thread must survive anything and reconnect
                    _log.exception("the rabbitmq I/O loop failed")
                finally:
                    self._connection = None
                    self._ready.clear()
                    self._lose_everything()
                    try:
                        connection.ioloop.close()
                    except Exception:  # noqa: BLE001 - the I/O thread must survive anything and reconnect
                        _log.debug("closing the I/O loop failed", exc_info=True)
            if self._closing.is_set():
                break
            # Back off unless the connection opened and then served for a while: one that
            # keeps dying at once (a bad argument, a broker refusing us) must not spin.
            served = self.connections > opened and time.monotonic() - started >= _SERVED
            failures = 0 if served else failures + 1
            delay = min(self._reconnect_max_delay, 0.05 * 2**failures) * random.uniform(0.5, 1)
            self._wake.wait(delay)

    def _on_open(self, connection: Any) -> None:
        self._unblocked.set()  # a new connection is unblocked until the broker says otherwise
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)
        connection.channel(on_open_callback=functools.partial(self._on_pub_channel, fresh=True))

    def _on_open_error(self, connection: Any, error: Exception) -> None:
        self._connection_error = str(error) or type(error).__name__
        _log.warning("cannot connect to %s: %s", self.url, self._connection_error)
        connection.ioloop.stop()

    def _on_close(self, connection: Any, reason: Exception) -> None:
        if not self._closing.is_set():
            _log.warning("connection to %s lost: %s", self.url, reason)
        self._connection_error = str(reason) or type(reason).__name__
        connection.ioloop.stop()

    def _on_blocked(self, _connection: Any, frame: Any) -> None:
        self._blocked_reason = getattr(frame.method, "reason", "") or "resource alarm"
        _log.warning("the broker blocked publishing: %s", self._blocked_reason)
        self._unblocked.clear()

    def _on_unblocked(self, _connection: Any, _frame: Any) -> None:
        self._unblocked.set()

    def _on_pub_channel(self, channel: Any, *, fresh: bool) -> None:
        """The publishing channel is open: on a `fresh` connection, or reopened after the
        broker closed the previous one (the consumers' channels are untouched then)."""
        self._pub_channel = channel
        self._next_tag = 0
        channel.add_on_close_callback(self._on_pub_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(
            ack_nack_callback=self._on_confirm,
            callback=functools.partial(self._on_confirm_ok, fresh=fresh),
        )

    def _on_confirm_ok(self, _frame: Any, *, fresh: bool) -> None:
        if not fresh:
            self._ready.set()
            return
        connection = self._connection
        with self._lock:
            self._settles.clear()
            self._settle_scheduled = False
            subscriptions = [s for s in self._subscriptions if s.active]
        for subscription in subscriptions:
            subscription.open(connection)
        self.connections += 1
        self._ready.set()
        if self.connections > 1:
            _log.warning("reconnected to %s", self.url)
            if self._listeners.active:
                self._listeners.emit(Reconnected(source="rabbitmq", attempt=self.connections))

    def _on_pub_channel_closed(self, channel: Any, reason: Exception) -> None:
        if channel is not self._pub_channel:
            return
        self._pub_channel = None
        connection = self._connection
        by_broker = isinstance(reason, self._pika.exceptions.ChannelClosedByBroker)
        alive = connection is not None and connection.is_open
        # The broker closed the channel over one message. When its reply names it (an
        # exchange, a size), that one was refused, and whether the others were stored is
        # unknown (published before it: most likely; after it: not): they count as lost,
        # and a Producer publishes them again. When it cannot be told which message it
        # was, all are refused: publishing them again would close the channel again.
        # A connection that died lost them all.
        if by_broker:
            culprit = _culprit(str(reason))
            self._fail_pending(str(reason), lost=culprit is not None, refused=culprit)
        else:
            self._fail_pending(str(reason), lost=True)
        if alive and not self._closing.is_set():
            _log.warning("publishing channel closed (%s); opening another", reason)
            self._ready.clear()
            connection.channel(
                on_open_callback=functools.partial(self._on_pub_channel, fresh=False)
            )

    def _fail_pending(
        self, reason: str, *, lost: bool, refused: Callable[[str, int], bool] | None = None
    ) -> None:
        """Settle every message waiting for a confirm: as refused those `refused(exchange,
        size)` picks, the others as lost when `lost`, else as refused too."""
        pending, self._pending = self._pending, {}
        self._tags_by_id.clear()
        self._returned.clear()
        for batch, message_id, exchange, size in pending.values():
            if refused is not None and refused(exchange, size):
                batch.settle(message_id, reason)
            else:
                batch.settle(message_id, reason, lost=lost)

    def _lose_everything(self) -> None:
        self._pub_channel = None
        self._get_channel = None
        self._fail_pending("connection lost", lost=True)
        with self._lock:
            outstanding, self._outstanding = self._outstanding, set()
            batches = list(self._batches)
        for batch in batches:
            batch.lose_rest()
        for result in outstanding:
            result.fail(ConnectionLost(f"connection to {self.url} lost: {self._connection_error}"))

    def _threadsafe(self, fn: Callable[[], None]) -> bool:
        connection = self._connection
        if connection is None:
            return False
        try:
            connection.ioloop.add_callback_threadsafe(fn)
        except Exception:  # noqa: BLE001 - the I/O thread must survive anything and reconnect
            return False
        return True

    def _wait_ready(self, timeout: float) -> None:
        self._start()
        if not self._ready.wait(timeout):
            raise ConnectionLost(
                f"not connected to {self.url} after {timeout:.1f}s"
                + (f": {self._connection_error}" if self._connection_error else "")
            )

    def _run_op(
        self,
        op: Callable[[Callable[[Any], None], Callable[[BaseException], None]], None],
        timeout: float,
        what: str,
    ) -> Any:
        """Run `op(ok, fail)` on the I/O thread and wait for its result."""
        self._wait_ready(min(timeout, self._connect_timeout))
        result = _Result()
        with self._lock:
            self._outstanding.add(result)

        def call() -> None:
            try:
                op(result.set, result.fail)
            except Exception as exc:  # noqa: BLE001 - the I/O thread must survive anything and reconnect
                result.fail(BackendUnavailable("rabbitmq", f"{what}: {exc}"))

        try:
            if not self._threadsafe(call):
                raise ConnectionLost(f"connection to {self.url} lost")
            return result.wait(timeout, what)
        finally:
            with self._lock:
                self._outstanding.discard(result)

    def _on_temp_channel(
        self,
        name: str,
        steps: Callable[[Any, Callable[[Any], None]], None],
        timeout: float = 30.0,
    ) -> Any:
        """Run AMQP `steps(channel, finish)` on a short-lived channel (for declarations).

        A broker error closes the channel; it is translated (406 -> TopologyConflict).
        """

        def op(ok: Callable[[Any], None], fail: Callable[[BaseException], None]) -> None:
            state = {"done": False}

            def finish(value: Any) -> None:
                state["done"] = True
                ok(value)
                if channel_ref and channel_ref[0].is_open:
                    channel_ref[0].close()

            channel_ref: list[Any] = []

            def on_close(_channel: Any, reason: Exception) -> None:
                if not state["done"]:
                    fail(_translate(reason, name))

            def on_open(channel: Any) -> None:
                channel_ref.append(channel)
                channel.add_on_close_callback(on_close)
                try:  # an error raised here would escape into the I/O loop: fail this op only
                    steps(channel, finish)
                except Exception as exc:  # noqa: BLE001
                    state["done"] = True
                    fail(BackendUnavailable("rabbitmq", f"declaring {name!r}: {exc}"))
                    channel.close()

            self._connection.channel(on_open_callback=on_open)

        return self._run_op(op, timeout, f"declaring {name!r}")

    # -- topology ---------------------------------------------------------------------

    def declare_queue(self, spec: QueueSpec) -> None:
        def steps(channel: Any, finish: Callable[[Any], None]) -> None:
            channel.queue_declare(
                spec.name,
                durable=spec.durable,
                arguments=spec.arguments(),
                callback=lambda _f: finish(None),
            )

        self._on_temp_channel(
            spec.dead_letter,
            lambda ch, fin: ch.queue_declare(
                spec.dead_letter,
                durable=spec.durable,
                arguments={"x-queue-type": spec.queue_type},
                callback=lambda _f: fin(None),
            ),
        )
        self._on_temp_channel(spec.name, steps)
        with self._lock:
            self._known_queues.add(spec.name)

    def ensure_queue(self, name: str) -> None:
        if name in self._known_queues:
            return
        try:
            self._on_temp_channel(
                name,
                lambda ch, fin: ch.queue_declare(name, passive=True, callback=lambda _f: fin(None)),
            )
        except _NotFound:
            self.declare_queue(QueueSpec(name))
        with self._lock:
            self._known_queues.add(name)

    def declare_delay(self, queue: str, delay_ms: int) -> str:
        name = delay_queue(queue, delay_ms)
        arguments = delay_queue_arguments(queue, delay_ms)
        # RabbitMQ deletes a queue unused for `x-expires`, messages and all; publishing to
        # it does not count, redeclaring does: renew the lease at half its length.
        renew_after = arguments["x-expires"] / 2000
        declared = self._delays.get(name)
        if declared is not None and time.monotonic() - declared < renew_after:
            return name
        self._on_temp_channel(
            name,
            lambda ch, fin: ch.queue_declare(
                name, durable=True, arguments=arguments, callback=lambda _f: fin(None)
            ),
        )
        with self._lock:
            self._delays[name] = time.monotonic()
        return name

    def declare_exchange(self, name: str) -> None:
        self._on_temp_channel(
            name,
            lambda ch, fin: ch.exchange_declare(
                name, exchange_type="topic", durable=True, callback=lambda _f: fin(None)
            ),
        )

    def bind(self, exchange: str, queue: str, pattern: str) -> None:
        self.declare_exchange(exchange)
        self._on_temp_channel(
            queue,
            lambda ch, fin: ch.queue_bind(
                queue, exchange, routing_key=pattern, callback=lambda _f: fin(None)
            ),
        )

    def delete_queue(self, name: str) -> None:
        with self._lock:
            self._known_queues.discard(name)
            self._delays.pop(name, None)
        self._on_temp_channel(
            name, lambda ch, fin: ch.queue_delete(name, callback=lambda _f: fin(None))
        )

    def delete_exchange(self, name: str) -> None:
        self._on_temp_channel(
            name, lambda ch, fin: ch.exchange_delete(name, callback=lambda _f: fin(None))
        )

    def depth(self, queue: str) -> int:
        try:
            count: int = self._on_temp_channel(
                queue,
                lambda ch, fin: ch.queue_declare(
                    queue, passive=True, callback=lambda f: fin(f.method.message_count)
                ),
            )
        except _NotFound:
            return 0
        return count

    # -- publishing -------------------------------------------------------------------

    def publish(self, messages: Sequence[Outgoing], *, timeout: float = 30.0) -> None:
        if not messages:
            return
        deadline = time.monotonic() + timeout
        self._wait_unblocked()
        self._wait_ready(min(timeout, self._connect_timeout))
        target = messages[0].exchange or messages[0].routing_key
        failed: dict[str, str] = {}
        lost: list[str] = []
        for start in range(0, len(messages), self._window):
            chunk = messages[start : start + self._window]
            batch = _Batch([m.properties.message_id or "" for m in chunk])
            with self._lock:
                self._batches.add(batch)
            try:
                if not self._ready.is_set() or not self._threadsafe(
                    functools.partial(self._publish_chunk, chunk, batch)
                ):
                    batch.lose_rest()
                self._wait_batch(batch, deadline, timeout)
            finally:
                with self._lock:
                    self._batches.discard(batch)
            failed.update(batch.failed)
            lost.extend(batch.lost)
        if lost:
            # Refused ones are unconfirmed too: naming only the lost would let a caller
            # that publishes `unconfirmed` again report the refused ones as sent.
            lost.extend(failed)
            raise ConnectionLost(
                f"connection to {self.url} lost before the broker confirmed {len(lost)} message(s)",
                lost,
            )
        if failed:
            raise PublishError(target, failed)

    def _wait_unblocked(self) -> None:
        if self._unblocked.is_set():
            return
        if not self._unblocked.wait(self._blocked_timeout):
            raise BrokerBlocked(self._blocked_reason, self._blocked_timeout)

    def _wait_batch(self, batch: _Batch, deadline: float, timeout: float) -> None:
        blocked_since: float | None = None
        while not batch.done.wait(0.05):
            now = time.monotonic()
            if not self._unblocked.is_set():
                blocked_since = blocked_since or now
                if now - blocked_since >= self._blocked_timeout:
                    raise BrokerBlocked(self._blocked_reason, now - blocked_since)
            else:
                blocked_since = None
            if now >= deadline:
                raise DeadlineExceeded(timeout, "waiting for publisher confirms")

    def _publish_chunk(self, chunk: Sequence[Outgoing], batch: _Batch) -> None:
        channel = self._pub_channel
        if channel is None or not channel.is_open:
            for out in chunk:
                batch.settle(out.properties.message_id or "", lost=True)
            return
        pika_props = self._pika.BasicProperties
        publish = channel.basic_publish
        for out in chunk:
            p = out.properties
            props = pika_props(
                content_type=p.content_type,
                delivery_mode=2 if p.persistent else 1,
                message_id=p.message_id,
                type=p.type,
                timestamp=p.timestamp,
                headers=dict(p.headers) if p.headers else None,
                priority=p.priority,
            )
            message_id = p.message_id or ""
            self._next_tag += 1
            tag = self._next_tag
            try:
                publish(out.exchange, out.routing_key, out.body, props, mandatory=out.mandatory)
            except Exception as exc:  # noqa: BLE001 - an unencodable message is refused, not lost
                self._next_tag -= 1
                batch.settle(message_id, f"not sent: {type(exc).__name__}: {exc}")
                continue
            self._pending[tag] = (batch, message_id, out.exchange, len(out.body))
            if out.mandatory:
                self._tags_by_id.setdefault(message_id, deque()).append(tag)

    def _on_return(self, _channel: Any, _method: Any, props: Any, _body: bytes) -> None:
        reason = (
            f"{getattr(_method, 'reply_code', 312)} {getattr(_method, 'reply_text', 'NO_ROUTE')}"
        )
        tags = self._tags_by_id.get(props.message_id or "")
        if tags:
            for tag in tags:
                if tag not in self._returned:
                    self._returned[tag] = reason
                    break

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        nacked = isinstance(method, self._pika.spec.Basic.Nack)
        if method.multiple:
            tags = []
            for tag in self._pending:
                if tag > method.delivery_tag:
                    break
                tags.append(tag)
        else:
            tags = [method.delivery_tag]
        for tag in tags:
            entry = self._pending.pop(tag, None)
            if entry is None:
                continue
            batch, message_id, _, _ = entry
            queue = self._tags_by_id.get(message_id)
            if queue:
                with contextlib.suppress(ValueError):
                    queue.remove(tag)
                if not queue:
                    del self._tags_by_id[message_id]
            returned = self._returned.pop(tag, None)
            if returned is not None:
                batch.settle(message_id, f"unroutable ({returned})")
            elif nacked:
                batch.settle(message_id, "nacked by the broker")
            else:
                batch.settle(message_id)

    # -- consuming --------------------------------------------------------------------

    def consume(
        self, queue: str, *, prefetch: int, on_delivery: Callable[[Delivery], None]
    ) -> _RabbitSubscription:
        subscription = _RabbitSubscription(self, queue, prefetch, on_delivery)
        self._wait_ready(self._connect_timeout)
        with self._lock:
            self._subscriptions.append(subscription)
        if not self._threadsafe(lambda: subscription.open(self._connection)):
            subscription.active = False  # or the next connection would reopen it
            self._forget(subscription)
            raise ConnectionLost(f"connection to {self.url} lost")
        try:
            subscription.started.wait(30.0, f"consuming {queue!r}")
        except Exception:
            subscription.active = False
            self._forget(subscription)
            raise
        return subscription

    def _forget(self, subscription: _RabbitSubscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    def _settle(self, channel: Any, tag: int, requeue: bool | None) -> None:
        with self._lock:
            self._settles.append((channel, tag, requeue))
            if self._settle_scheduled:
                return
            self._settle_scheduled = True
        if not self._threadsafe(self._flush_settles):
            with self._lock:
                self._settles.clear()
                self._settle_scheduled = False

    def _flush_settles(self) -> None:
        with self._lock:
            settles, self._settles = self._settles, []
            self._settle_scheduled = False
        for channel, tag, requeue in settles:
            if not channel.is_open:
                continue  # a delivery of a closed channel: the broker redelivers it
            if requeue is None:
                channel.basic_ack(tag)
            else:
                channel.basic_reject(tag, requeue=requeue)

    def get(self, queue: str) -> Delivery | None:
        def op(ok: Callable[[Any], None], fail: Callable[[BaseException], None]) -> None:
            def with_channel(channel: Any) -> None:
                def on_get(ch: Any, method: Any, props: Any, body: bytes) -> None:
                    ok(
                        _RabbitDelivery(
                            self,
                            ch,
                            method.delivery_tag,
                            body,
                            _from_pika(props),
                            method.routing_key,
                            method.redelivered,
                        )
                    )

                # The channel is reused: its close callback fails whichever get is current.
                self._get_waiter = (fail, queue)
                channel.add_callback(
                    lambda _frame: ok(None), [self._pika.spec.Basic.GetEmpty], one_shot=True
                )
                channel.basic_get(queue, on_get, auto_ack=False)

            channel = self._get_channel
            if channel is not None and channel.is_open:
                with_channel(channel)
                return

            def on_open(channel: Any) -> None:
                self._get_channel = channel

                def on_close(_ch: Any, reason: Exception) -> None:
                    if self._get_channel is _ch:
                        self._get_channel = None
                    current_fail, current_queue = self._get_waiter
                    current_fail(_translate(reason, current_queue))

                channel.add_on_close_callback(on_close)
                with_channel(channel)

            self._connection.channel(on_open_callback=on_open)

        # One basic.get at a time on the shared get channel: AMQP allows no second one
        # while a first is pending (pika raises), so callers from other threads take turns.
        with self._get_lock:
            try:
                delivery: Delivery | None = self._run_op(op, 30.0, f"basic.get on {queue!r}")
            except _NotFound:
                return None
            except DeadlineExceeded:
                # Its basic.get is still pending: close the channel so the broker requeues
                # whatever it hands over late, and the next get starts on a new one.
                self._threadsafe(self._close_get_channel)
                raise
        return delivery

    def _close_get_channel(self) -> None:
        channel, self._get_channel = self._get_channel, None
        if channel is not None and channel.is_open:
            channel.close()

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection and stop the I/O thread."""
        with self._lock:
            self._closing.set()
            thread = self._thread
        self._wake.set()
        connection = self._connection
        if connection is not None:

            def shutdown() -> None:
                if connection.is_open:
                    connection.close()
                else:
                    connection.ioloop.stop()

            self._threadsafe(shutdown)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def __enter__(self) -> RabbitMQBroker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RabbitMQBroker({self.url!r})"


def _translate(reason: Exception, name: str) -> Exception:
    code = getattr(reason, "reply_code", None)
    text = str(getattr(reason, "reply_text", reason))
    if code == 404:
        return _NotFound(text)
    if code == 406:
        match = _INEQUIVALENT.search(text)
        return TopologyConflict(name, match.group(1) if match else None, text)
    if code is not None and code >= 300:
        return BackendUnavailable("rabbitmq", f"{name!r}: {code} {text}")
    return ConnectionLost(f"channel closed while working on {name!r}: {reason}")
