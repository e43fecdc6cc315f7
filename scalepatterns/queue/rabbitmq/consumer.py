"""A consumer on its own channel, kept consuming across broker cancels and channel errors.

Runs on the link's loop, like the link. The brokers wrap it in a `Subscription` whose
`cancel` and `close` wait in their own way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scalepatterns.errors import BackendUnavailable
from scalepatterns.queue.broker import Delivery, Properties

if TYPE_CHECKING:
    from scalepatterns.queue.rabbitmq.link import Fail, Link, Ok

__all__ = ["Consumer", "RabbitDelivery", "from_pika"]

_log = logging.getLogger("scalepatterns.queue.rabbitmq")
_REOPEN_FIRST_DELAY = 1.0


def from_pika(props: Any) -> Properties:
    return Properties(
        message_id=props.message_id,
        type=props.type,
        content_type=props.content_type,
        timestamp=props.timestamp,
        headers=props.headers or {},
        priority=props.priority,
        persistent=props.delivery_mode == 2,
    )


class RabbitDelivery:
    """A delivery from RabbitMQ; `ack` and `reject` are safe from any thread."""

    __slots__ = (
        "_channel",
        "_link",
        "_settle_lock",
        "_settled",
        "_tag",
        "body",
        "properties",
        "redelivered",
        "routing_key",
    )

    def __init__(self, link: Link, channel: Any, method: Any, props: Any, body: bytes) -> None:
        self._link = link
        self._channel = channel
        self._tag: int = method.delivery_tag
        self._settle_lock = threading.Lock()
        self._settled = False
        self.body = body
        self.properties = from_pika(props)
        self.routing_key: str = method.routing_key
        self.redelivered: bool = method.redelivered

    def ack(self) -> None:
        self._settle(None)

    def reject(self, *, requeue: bool) -> None:
        self._settle(requeue)

    def _settle(self, requeue: bool | None) -> None:
        # Settling a tag twice is a channel error in RabbitMQ that would close the channel
        # under every other delivery on it: only the first settlement goes out.
        with self._settle_lock:
            if self._settled:
                return
            self._settled = True
        self._link.settle(self._channel, self._tag, requeue)


class Consumer:
    """Consumes `queue` with `prefetch` on a channel of its own while `active`."""

    def __init__(
        self, link: Link, queue: str, prefetch: int, on_delivery: Callable[[Delivery], None]
    ) -> None:
        self._link = link
        self.queue = queue
        self.prefetch = prefetch
        self.on_delivery = on_delivery
        self.channel: Any = None
        self.consumer_tag: str | None = None
        self.active = True
        self._started: tuple[Ok, Fail] | None = None
        self._reopen_delay = _REOPEN_FIRST_DELAY

    def start(self, ok: Ok, fail: Fail) -> None:
        """Open the channel and consume: `ok(None)` once the broker said consume-ok."""
        self._started = (ok, fail)
        self.open(self._link.connection)

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
        except Exception as exc:  # noqa: BLE001 - this consumer fails, not the connection
            self._link.remove_consumer(self)
            self._fail_start(BackendUnavailable("rabbitmq", f"consuming {self.queue!r}: {exc}"))
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
        if self.active:
            self._link.loop.call_later(1.0, self._consume)

    def _on_consume_ok(self, _frame: Any) -> None:
        self._reopen_delay = _REOPEN_FIRST_DELAY
        started, self._started = self._started, None
        if started is not None:
            started[0](None)

    def _fail_start(self, error: BaseException) -> None:
        started, self._started = self._started, None
        if started is not None:
            started[1](error)

    def _on_closed(self, channel: Any, reason: Exception) -> None:
        if channel is self.channel:
            self.channel = None
        code = getattr(reason, "reply_code", None)
        if code in (None, 0, 200) or not self.active:
            return
        if self._started is not None:  # never consumed (no such queue...): the caller hears it
            _log.error("consumer channel of %s closed by the broker: %s", self.queue, reason)
            self._link.remove_consumer(self)
            self._fail_start(BackendUnavailable("rabbitmq", f"consuming {self.queue!r}: {reason}"))
            return
        # Consuming already (consumer_timeout, a deleted queue...): keep the subscription,
        # on a new channel, retried with backoff while the connection lives.
        connection = self._link.connection
        if connection is None or not connection.is_open:
            return  # the reconnect reopens every active consumer
        delay, self._reopen_delay = self._reopen_delay, min(self._reopen_delay * 2, 30.0)
        _log.warning(
            "consumer channel of %s closed by the broker (%s); consuming again in %.0fs",
            self.queue,
            reason,
            delay,
        )
        self._link.loop.call_later(delay, lambda: self._reopen(connection))

    def _reopen(self, connection: Any) -> None:
        if self.active and self.channel is None and connection.is_open:
            self.open(connection)

    def _on_message(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        try:
            self.on_delivery(RabbitDelivery(self._link, channel, method, props, body))
        except Exception:  # noqa: BLE001 - a consumer's callback must not kill the I/O loop
            _log.exception("on_delivery callback failed for %s", self.queue)

    def cancel(self, ok: Ok, _fail: Fail) -> None:
        """Stop new deliveries (``basic.cancel``); received ones can still be settled."""
        self._link.remove_consumer(self)
        channel, tag = self.channel, self.consumer_tag
        if channel is None or not channel.is_open or tag is None:
            ok(None)
            return
        channel.basic_cancel(tag, callback=lambda _frame: ok(None))

    def close(self, ok: Ok, _fail: Fail) -> None:
        """Close the channel: every unsettled delivery goes back to the queue."""
        self._link.remove_consumer(self)
        channel, self.channel = self.channel, None
        if channel is not None and channel.is_open:
            channel.close()
        ok(None)
