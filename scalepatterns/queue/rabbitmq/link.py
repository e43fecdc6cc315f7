"""`Link`: one AMQP connection kept alive on one event loop, shared by both brokers.

Everything here runs on the loop the connection lives on: pika's own IOLoop on the sync
broker's I/O thread, or the application's asyncio loop for the async broker. pika calls
back the same way on both, so this code is written once; the brokers only differ in how a
caller waits for what the link reports (a `threading.Event` or an `asyncio.Event`, a
thread-safe result or a future). Callers on other threads touch the link only through
`EventLoop.call_soon_threadsafe`, `settle` and the registries guarded by `_lock`.

When the connection drops the link reconnects with exponential backoff, moving to the
next node's URL each time, and reopens every consumer. Unconfirmed publishes are settled
as lost (the producer publishes them again); unacked deliveries are redelivered by the
broker; acks for deliveries of the dead connection are dropped.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Protocol

from scalepatterns.errors import BackendUnavailable
from scalepatterns.events import Listeners
from scalepatterns.queue.broker import Outgoing
from scalepatterns.queue.errors import BrokerRefused, ConnectionLost, TopologyConflict
from scalepatterns.queue.events import Reconnected
from scalepatterns.queue.rabbitmq.confirms import Batch, ConfirmTracker, culprit

__all__ = ["EventLoop", "Fail", "Flag", "Link", "NotFound", "Ok", "translate"]

_log = logging.getLogger("scalepatterns.queue.rabbitmq")
_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)' for (?:queue|exchange) '([^']*)'")
_SERVED = 5.0  # seconds a connection must last for the reconnect backoff to start over

Ok = Callable[[Any], None]
Fail = Callable[[BaseException], None]
Op = Callable[[Ok, Fail], None]


class NotFound(Exception):
    """The broker answered 404 (no such queue or exchange)."""


class Flag(Protocol):
    """A `threading.Event` or an `asyncio.Event`: set and cleared on the loop."""

    def set(self) -> None: ...

    def clear(self) -> None: ...

    def is_set(self) -> bool: ...


class EventLoop(Protocol):
    """What the link needs from the loop it runs on."""

    def connect(
        self,
        parameters: Any,
        on_open: Callable[[Any], None],
        on_open_error: Callable[[Any, BaseException], None],
        on_close: Callable[[Any, BaseException], None],
    ) -> Any:
        """Start opening a pika connection on this loop."""
        ...

    def call_later(self, delay: float, fn: Callable[[], None]) -> Callable[[], None]:
        """Run `fn` on the loop after `delay` seconds; returns a function that cancels it."""
        ...

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the loop soon; callable from any thread."""
        ...

    def new_flag(self) -> Flag: ...


def translate(reason: BaseException, name: str) -> Exception:
    """The error a caller hears for a channel the broker closed while working on `name`."""
    code = getattr(reason, "reply_code", None)
    text = str(getattr(reason, "reply_text", reason))
    if code == 404:
        return NotFound(text)
    if code == 406:
        match = _INEQUIVALENT.search(text)
        if match:  # the broker names the queue: a work queue's dead-letter queue, say
            return TopologyConflict(match[2], match[1], text)
        return TopologyConflict(name, None, text)
    if code is not None and code >= 300:
        return BackendUnavailable("rabbitmq", f"{name!r}: {code} {text}")
    return ConnectionLost(f"channel closed while working on {name!r}: {reason}")


class Link:
    """One connection, its publishing channel and its consumers, kept alive on `loop`.

    Args:
        pika: the pika module (imported by the broker).
        nodes: connection parameters of every node; the link moves to the next one each
            time a connection is lost or cannot be opened.
        urls: each node's URL without its password (for logs and errors).
    """

    def __init__(
        self,
        pika: ModuleType,
        nodes: Sequence[Any],
        urls: Sequence[str],
        loop: EventLoop,
        *,
        reconnect_max_delay: float,
        listeners: Listeners,
    ) -> None:
        self._pika = pika
        self._nodes = list(nodes)
        self._urls = list(urls)
        self._node = 0
        self.loop = loop
        self._reconnect_max_delay = reconnect_max_delay
        self._listeners = listeners
        self._lock = threading.Lock()
        self.ready = loop.new_flag()
        self.unblocked = loop.new_flag()
        self.unblocked.set()
        self.blocked_reason = ""
        self.refused: BrokerRefused | None = None
        self.closing = False
        self.connection: Any = None
        self.connection_error = ""
        self.connections = 0
        self._failures = 0
        self._opened_at = 0.0
        self._pub_channel: Any = None
        self._recycling = False
        self._nacked = False  # the publishing channel nacked: replace it once idle
        self._confirms = ConfirmTracker()
        self._outstanding: set[Fail] = set()
        self._batches: set[Batch] = set()
        self.consumers: list[Any] = []
        self._settles: list[tuple[Any, int, bool | None]] = []
        self._settle_scheduled = False
        self._get_channel: Any = None
        self._get_waiter: tuple[Fail, str] = (lambda _exc: None, "")
        self.known_queues: dict[str, str] = {}  # declared queue -> its queue type
        self.delays: dict[str, float] = {}  # delay queue -> when it was last declared
        self._on_closed: list[Callable[[], None]] = []

    @property
    def url(self) -> str:
        """The URL (without password) of the node the link uses or tries now."""
        return self._urls[self._node]

    # -- the connection ---------------------------------------------------------------

    def connect(self) -> None:
        if self.closing or self.refused is not None:
            return
        try:
            self.connection = self.loop.connect(
                self._nodes[self._node], self._on_open, self._on_open_error, self._on_close
            )
        except Exception as exc:  # noqa: BLE001 - the link must survive anything and reconnect
            _log.warning("cannot create a connection to %s: %s", self.url, exc)
            self._reconnect_later(exc)

    def _on_open(self, connection: Any) -> None:
        self._opened_at = time.monotonic()
        self.unblocked.set()  # a new connection is unblocked until the broker says otherwise
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)
        connection.channel(on_open_callback=functools.partial(self._on_pub_channel, fresh=True))

    def _on_open_error(self, connection: Any, error: BaseException) -> None:
        if connection is self.connection:
            self.connection = None
        exceptions = self._pika.exceptions
        if isinstance(
            error,
            (
                exceptions.ProbableAuthenticationError,
                exceptions.ProbableAccessDeniedError,
                exceptions.AuthenticationError,
            ),
        ):
            # Wrong credentials or vhost: no retry can help. Every waiting and later
            # call hears the broker's reason at once.
            self.refused = BrokerRefused(self.url, _broker_words(error))
            _log.error("%s", self.refused)
            self._lose_everything(self.refused)
            self.ready.set()  # wakes every caller waiting for a connection: they raise it
            if self.closing:
                self._finish_close()
            return
        self.connection_error = _broker_words(error)
        _log.warning("cannot connect to %s: %s", self.url, self.connection_error)
        self._reconnect_later(error)

    def _on_close(self, connection: Any, reason: BaseException) -> None:
        if not self.closing:
            _log.warning("connection to %s lost: %s", self.url, reason)
        self.connection_error = str(reason) or type(reason).__name__
        if connection is self.connection:
            self.connection = None
        self._reconnect_later(reason)

    def _reconnect_later(self, reason: BaseException) -> None:
        self.ready.clear()
        if self.closing:
            self._finish_close()
            return
        self._lose_everything(
            ConnectionLost(f"connection to {self.url} lost: {self.connection_error or reason}")
        )
        # Back off unless the connection served for a while: one that keeps dying at
        # once (a broker refusing us, a node booting) must not spin.
        served = self._opened_at and time.monotonic() - self._opened_at >= _SERVED
        self._failures = 0 if served else self._failures + 1
        self._opened_at = 0.0
        self._node = (self._node + 1) % len(self._nodes)
        delay = min(self._reconnect_max_delay, 0.05 * 2**self._failures) * random.uniform(0.5, 1)
        if len(self._nodes) > 1 and self._failures < len(self._nodes):
            delay = 0.0  # another node may answer at once
        self.loop.call_later(delay, self.connect)

    def _on_blocked(self, _connection: Any, frame: Any) -> None:
        self.blocked_reason = getattr(frame.method, "reason", "") or "resource alarm"
        _log.warning("the broker blocked publishing: %s", self.blocked_reason)
        self.unblocked.clear()

    def _on_unblocked(self, _connection: Any, _frame: Any) -> None:
        self.unblocked.set()

    def _lose_everything(self, error: BaseException) -> None:
        self.unblocked.set()  # a block does not outlive its connection
        self._pub_channel = None
        self._get_channel = None
        self._confirms.fail_all("connection lost", lost=True)
        with self._lock:
            outstanding, self._outstanding = self._outstanding, set()
            batches = list(self._batches)
            self._settles.clear()
        for batch in batches:
            batch.lose_rest()
        for fail in outstanding:
            fail(error)

    # -- publishing -------------------------------------------------------------------

    def _on_pub_channel(self, channel: Any, *, fresh: bool) -> None:
        """The publishing channel is open: on a `fresh` connection, or reopened after the
        broker closed the previous one (the consumers' channels are untouched then)."""
        self._pub_channel = channel
        self._recycling = self._nacked = False
        channel.add_on_close_callback(self._on_pub_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(
            ack_nack_callback=self._on_confirm,
            callback=functools.partial(self._on_confirm_ok, fresh=fresh),
        )

    def _on_confirm_ok(self, _frame: Any, *, fresh: bool) -> None:
        if fresh:
            connection = self.connection
            with self._lock:
                consumers = [c for c in self.consumers if c.active]
            for consumer in consumers:
                consumer.open(connection)
            self.connections += 1
            if self.connections > 1:
                _log.warning("reconnected to %s", self.url)
                if self._listeners.active:
                    self._listeners.emit(Reconnected(source="rabbitmq", attempt=self.connections))
        self.ready.set()

    def _on_pub_channel_closed(self, channel: Any, reason: Exception) -> None:
        if channel is not self._pub_channel:
            return
        self._pub_channel = None
        self.ready.clear()  # before the waiting publishers hear of it: they wait again
        connection = self.connection
        alive = connection is not None and connection.is_open
        # The broker closed the channel over one message. When its reply names it (an
        # exchange, a size), that one was refused, and whether the others were stored is
        # unknown (published before it: most likely; after it: not): they count as lost,
        # and a Producer publishes them again. When it cannot be told which message it
        # was, all are refused: publishing them again would close the channel again.
        # A connection that died lost them all.
        if isinstance(reason, self._pika.exceptions.ChannelClosedByBroker):
            named = culprit(str(reason))
            self._confirms.fail_all(str(reason), lost=named is not None, refused=named)
        else:
            self._confirms.fail_all(str(reason), lost=True)
        if alive and not self.closing:
            _log.warning("publishing channel closed (%s); opening another", reason)
            connection.channel(
                on_open_callback=functools.partial(self._on_pub_channel, fresh=False)
            )

    def add_consumer(self, consumer: Any) -> None:
        """Keep `consumer` consuming: every new connection reopens it while it is active."""
        with self._lock:
            self.consumers.append(consumer)

    def remove_consumer(self, consumer: Any) -> None:
        consumer.active = False  # or a reconnect racing with this would reopen it
        with self._lock:
            if consumer in self.consumers:
                self.consumers.remove(consumer)

    def track(self, batch: Batch) -> None:
        """Count `batch` in: a lost connection settles what is left of it as lost."""
        with self._lock:
            self._batches.add(batch)

    def untrack(self, batch: Batch) -> None:
        with self._lock:
            self._batches.discard(batch)

    def publish(self, messages: Sequence[Outgoing], batch: Batch) -> None:
        """Send `messages` on the publishing channel; `batch` hears each one's fate."""
        channel = self._pub_channel
        if channel is None or not channel.is_open:
            for out in messages:
                batch.settle(out.properties.message_id or "", lost=True)
            return
        pika_props = self._pika.BasicProperties
        publish = channel.basic_publish
        sent = self._confirms.sent
        for out in messages:
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
            try:
                publish(out.exchange, out.routing_key, out.body, props, mandatory=out.mandatory)
            except Exception as exc:  # noqa: BLE001 - an unencodable message is refused, not lost
                batch.settle(message_id, f"not sent: {type(exc).__name__}: {exc}")
                continue
            sent(batch, message_id, out.exchange, len(out.body))

    def _on_return(self, _channel: Any, method: Any, props: Any, _body: bytes) -> None:
        reason = f"{getattr(method, 'reply_code', 312)} {getattr(method, 'reply_text', 'NO_ROUTE')}"
        self._confirms.returned(props.message_id or "", reason)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        nacked = isinstance(method, self._pika.spec.Basic.Nack)
        self._confirms.confirmed(method.delivery_tag, multiple=bool(method.multiple), nacked=nacked)
        self._nacked = self._nacked or nacked
        if self._nacked and not self._confirms:
            self._recycle_pub_channel()

    def _recycle_pub_channel(self) -> None:
        """Open a new publishing channel once a channel that nacked has no confirm left
        to wait for. A channel whose first publish to a quorum queue came while the
        queue elected a new leader nacks every later publish (seen on RabbitMQ 3.10),
        while a new channel is served once the leader is known."""
        channel = self._pub_channel
        if channel is not None and channel.is_open and not self._recycling:
            self._recycling = True
            _log.warning("the broker nacked a publish; opening a new publishing channel")
            channel.close()

    # -- acks -------------------------------------------------------------------------

    def settle(self, channel: Any, tag: int, requeue: bool | None) -> None:
        """Ack (`requeue` None) or reject a delivery; from any thread, sent in batches."""
        with self._lock:
            self._settles.append((channel, tag, requeue))
            if self._settle_scheduled:
                return
            self._settle_scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._flush_settles)
        except RuntimeError:  # the loop is closed: the broker redelivers them
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

    # -- one-shot operations ----------------------------------------------------------

    def run(self, op: Op, ok: Ok, fail: Fail, what: str) -> None:
        """Run `op(ok, fail)` now, after the acks asked for before it (a consumer closed
        right after an ack must not give that message back); a lost connection fails it
        with `ConnectionLost`."""
        self._flush_settles()
        if self.refused is not None:
            fail(self.refused)
            return
        # An open connection is enough: the operations use channels of their own, and the
        # publishing channel may be reopening after a broker error meanwhile.
        connection = self.connection
        if connection is None or not connection.is_open:
            fail(ConnectionLost(f"not connected to {self.url}: {what}"))
            return
        with self._lock:
            self._outstanding.add(fail)

        def done(value: Any) -> None:
            with self._lock:
                self._outstanding.discard(fail)
            ok(value)

        def failed(error: BaseException) -> None:
            with self._lock:
                self._outstanding.discard(fail)
            fail(error)

        try:
            op(done, failed)
        except Exception as exc:  # noqa: BLE001 - fail this operation, not the connection
            failed(BackendUnavailable("rabbitmq", f"{what}: {exc}"))

    def on_temp_channel(
        self, name: str, steps: Callable[[Any, Ok], None], ok: Ok, fail: Fail
    ) -> None:
        """Run AMQP `steps(channel, finish)` on a short-lived channel (declarations).

        A broker error closes the channel; it is translated (406 -> TopologyConflict).
        """
        state = {"done": False}
        channel_ref: list[Any] = []

        def finish(value: Any) -> None:
            state["done"] = True
            ok(value)
            if channel_ref and channel_ref[0].is_open:
                channel_ref[0].close()

        def on_close(_channel: Any, reason: Exception) -> None:
            if not state["done"]:
                state["done"] = True
                fail(translate(reason, name))

        def on_open(channel: Any) -> None:
            channel_ref.append(channel)
            channel.add_on_close_callback(on_close)
            try:  # an error raised here would escape into the I/O loop: fail this op only
                steps(channel, finish)
            except Exception as exc:  # noqa: BLE001
                state["done"] = True
                fail(BackendUnavailable("rabbitmq", f"declaring {name!r}: {exc}"))
                channel.close()

        self.connection.channel(on_open_callback=on_open)

    def basic_get(self, queue: str, make_delivery: Callable[..., Any], ok: Ok, fail: Fail) -> None:
        """One ``basic.get`` on the shared get channel: `ok(delivery)` or `ok(None)`."""

        def with_channel(channel: Any) -> None:
            def on_get(ch: Any, method: Any, props: Any, body: bytes) -> None:
                ok(make_delivery(self, ch, method, props, body))

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

            def on_close(closed: Any, reason: Exception) -> None:
                if self._get_channel is closed:
                    self._get_channel = None
                current_fail, current_queue = self._get_waiter
                current_fail(translate(reason, current_queue))

            channel.add_on_close_callback(on_close)
            with_channel(channel)

        self.connection.channel(on_open_callback=on_open)

    def close_get_channel(self) -> None:
        """A ``basic.get`` timed out: close its channel so the broker requeues whatever it
        hands over late, and the next get starts on a new one."""
        channel, self._get_channel = self._get_channel, None
        if channel is not None and channel.is_open:
            channel.close()

    def close(self, on_closed: Callable[[], None]) -> None:
        """Close the connection and stop reconnecting; `on_closed` runs once it is closed."""
        self.closing = True
        self._on_closed.append(on_closed)
        connection = self.connection
        if connection is None or connection.is_closed:
            self._finish_close()
        elif not connection.is_closing:
            connection.close()  # its close (or open-error) callback finishes the close

    def _finish_close(self) -> None:
        self._lose_everything(ConnectionLost(f"the broker for {self.url} was closed"))
        callbacks, self._on_closed = self._on_closed, []
        for callback in callbacks:
            callback()


def _broker_words(error: BaseException) -> str:
    """The broker's own reason inside pika's connection error (``403 ACCESS_REFUSED ...``),
    or the socket error under pika's workflow error, else the error's text."""
    text = str(error)
    if match := re.search(r"\((\d+)\) '([^']*)'", text):
        return f"{match[1]} {match[2]}"
    for arg in error.args:
        attempts = getattr(arg, "exceptions", None)  # pika's AMQPConnectionWorkflowFailed
        if attempts:
            return repr(attempts[-1])
    return text or type(error).__name__
