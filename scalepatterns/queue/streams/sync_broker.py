"""`RedisStreamsBroker`: the `Broker` Protocol on Redis Streams with a redis-py client.

Each subscription runs its consuming loop on a thread of its own (a blocking XREAD
holds a pooled connection while the queue is empty); one settler thread per broker
sends the acks, rejects and give-backs of every delivery in batches.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from scalepatterns._redis_url import close_client
from scalepatterns._steps import Flow, R, drive
from scalepatterns.errors import BackendUnavailable
from scalepatterns.events import Listeners
from scalepatterns.queue.broker import Delivery, Outgoing, QueueSpec
from scalepatterns.queue.streams.consumer import GIVE_BACK, Consumer, StreamsDelivery
from scalepatterns.queue.streams.core import StreamsCore
from scalepatterns.queue.streams.keys import DEFAULT_PREFIX
from scalepatterns.queue.streams.settings import StreamsSettings, describe, make_client

__all__ = ["RedisStreamsBroker"]

_log = logging.getLogger("scalepatterns.queue.redis")
DEFAULT_URL = "redis://127.0.0.1:6379/0"
_LINGER = 0.002


class _Waker:
    """A consumer's wake-up call, for a thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> None:
        self._event.wait(timeout)
        self._event.clear()


class _Subscription:
    def __init__(self, broker: RedisStreamsBroker, consumer: Consumer) -> None:
        self._broker = broker
        self.consumer = consumer
        self.thread = threading.Thread(
            target=self._run, name=f"sp-redis-consumer-{consumer.keys.queue}", daemon=True
        )

    def _run(self) -> None:
        try:
            drive(self.consumer.loop(self._broker._core.client))
        except Exception:  # noqa: BLE001 - logged; the queue's messages stay safe in Redis
            if not self.consumer.cancelled:  # else: the client was closed under its read
                _log.exception("the consumer of %s stopped", self.consumer.keys.queue)

    def cancel(self) -> None:
        self.consumer.stop(close=False)

    def close(self) -> None:
        # The loop may sit in a blocking XREAD for a moment more: it fetches nothing
        # after this, and gives back what a fetch under way brings (via the settler).
        self._broker._give_back(self.consumer.stop(close=True))
        with contextlib.suppress(BackendUnavailable):
            self._broker._run(self.consumer.forget(self._broker._core.client), "closing")

    def join(self) -> None:
        """Wait for the loop to end, unless it sits in a blocking read (which fetches
        nothing: closing the client ends it)."""
        if self.thread is not threading.current_thread() and not self.consumer.reading:
            self.thread.join(timeout=self._broker._core.settings.timeout + 1)


class RedisStreamsBroker:
    """A `Broker` on Redis Streams: a stream per queue, consumed by one consumer group.

    Args:
        client_or_url: a redis-py client (``redis.Redis``, a Sentinel-managed
            ``master_for(...)`` client or ``redis.cluster.RedisCluster``), or a URL
            (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``; the broker
            then owns the client and closes it).
        prefix: prefix of every key (see `scalepatterns.queue.streams.keys`).
        visibility_timeout: seconds a delivered message may stay unsettled before another
            consumer takes it over (a consumer that died or hangs); cover the slowest
            handler plus the time a message waits in the worker's prefetch. A later
            settlement logs a warning: the message may have been handled twice.
        max_message_size: bytes (body and properties) above which `publish` refuses a
            message with `PublishError`.
        min_replicas: with more than 0, `publish` waits (WAIT) up to `replica_timeout`
            for that many replicas to hold the messages, and reports them nacked
            (`PublishError.nacked`: a `Producer` publishes them again) otherwise.
        timeout: socket timeout of a client made from a URL: a server that does not
            answer fails a call with `ConnectionLost` after this long.

    Publishing counts as confirmed once Redis answered the script that added the
    messages (with `min_replicas`, once the replicas acknowledged them). How durable
    that is depends on the server's persistence (``appendonly yes``, ``appendfsync``).

    ```python
    import threading
    from scalepatterns.queue import Producer, RedisStreamsBroker, Worker

    broker = RedisStreamsBroker("redis://127.0.0.1:6379/0", prefix="sp:docs:")
    done = threading.Event()
    with Worker(broker, "docs.greetings", lambda message: done.set()):
        Producer(broker).publish("docs.greetings", {"name": "Ada"})
        assert done.wait(5)
    broker.delete_queue("docs.greetings")
    broker.delete_queue("docs.greetings.dead")
    broker.close()
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
        client, self._owns_client = make_client(client_or_url, settings, asyncio=False)
        self.url = describe(client)
        self._core = StreamsCore(client, settings, self.url)
        self._flush_lock = threading.Lock()
        self._settle_wanted = threading.Event()
        self._lock = threading.Lock()
        self._settler: threading.Thread | None = None
        self._subscriptions: set[_Subscription] = set()
        self._closed = False

    @property
    def client(self) -> Any:
        """The redis-py client the broker talks through."""
        return self._core.client

    def _run(self, flow: Flow[R], what: str, unconfirmed: Sequence[str] = ()) -> R:
        if self._closed:
            raise BackendUnavailable("redis", "the broker was closed")
        return drive(self._core.guard(flow, what, unconfirmed))

    # -- settling ---------------------------------------------------------------------

    def _settled(self) -> None:
        """A delivery was settled: wake the settler (started on first use)."""
        self._settle_wanted.set()
        if self._settler is None:
            with self._lock:
                if self._settler is None and not self._closed:
                    self._settler = threading.Thread(
                        target=self._settle_loop, name="sp-redis-settler", daemon=True
                    )
                    self._settler.start()

    def _settle_got(self, delivery: StreamsDelivery, kind: str) -> None:
        self._core.settlements.add(delivery, kind)
        self._settled()

    def _give_back(self, deliveries: list[StreamsDelivery]) -> None:
        for delivery in deliveries:
            self._core.settlements.add(delivery, GIVE_BACK)
        with contextlib.suppress(BackendUnavailable):
            self.flush()

    def flush(self) -> None:
        """Send the settlements waiting now (the settler does so on its own; `get`,
        `depth` and `delete_queue` do it first, so they see every earlier settlement)."""
        with self._flush_lock:
            drive(self._core.guard(self._core.send_settlements(), "settling deliveries"))

    def _settle_loop(self) -> None:
        failures = 0
        while not self._closed:
            self._settle_wanted.wait(0.5)
            self._settle_wanted.clear()
            # A moment for more to gather, and for a consumer's loop to carry them with
            # its next fetch.
            time.sleep(_LINGER)
            if not self._core.settlements:
                continue
            try:
                self.flush()
                failures = 0
            except BackendUnavailable as exc:
                failures += 1
                if failures == 1:
                    _log.warning("could not send settlements (%s); trying again", exc)
                threading.Event().wait(min(2.0, 0.05 * 2**failures))
                self._settle_wanted.set()

    # -- topology ---------------------------------------------------------------------

    def declare_queue(self, spec: QueueSpec) -> None:
        self._run(self._core.declare_queue(spec), f"declaring {spec.name!r}")

    def ensure_queue(self, name: str) -> None:
        self._run(self._core.ensure_queue(name), f"declaring {name!r}")

    def declare_delay(self, queue: str, delay: float) -> str:
        return self._core.declare_delay(queue, delay)

    def declare_exchange(self, name: str) -> None:
        self._run(self._core.declare_exchange(name), f"declaring exchange {name!r}")

    def bind(self, exchange: str, queue: str, pattern: str) -> None:
        self._run(self._core.bind(exchange, queue, pattern), f"binding {queue!r}")

    def delete_queue(self, name: str) -> None:
        self.flush()
        self._run(self._core.delete_queue(name), f"deleting {name!r}")

    def delete_exchange(self, name: str) -> None:
        self._run(self._core.delete_exchange(name), f"deleting exchange {name!r}")

    # -- publishing and consuming -----------------------------------------------------

    def publish(self, messages: Sequence[Outgoing], *, timeout: float = 30.0) -> None:
        """Publish; return once Redis stored every message (see `Broker.publish`).

        `timeout` is not used: each call is bounded by the client's socket timeout.
        """
        if messages:
            ids = [m.properties.message_id or "" for m in messages]
            target = messages[0].exchange or messages[0].routing_key
            self._run(self._core.publish(messages), f"publishing to {target!r}", ids)

    def consume(
        self, queue: str, *, prefetch: int, on_delivery: Callable[[Delivery], None]
    ) -> _Subscription:
        consumer = self._run(
            self._core.consumer(queue, prefetch, on_delivery, _Waker(), self._settled),
            f"consuming {queue!r}",
        )
        subscription = _Subscription(self, consumer)
        with self._lock:
            if self._closed:
                raise BackendUnavailable("redis", "the broker was closed")
            self._subscriptions = {s for s in self._subscriptions if s.thread.is_alive()}
            self._subscriptions.add(subscription)
        subscription.thread.start()
        return subscription

    def get(self, queue: str) -> Delivery | None:
        self.flush()
        return self._run(self._core.get(queue, self._settle_got), f"getting from {queue!r}")

    def depth(self, queue: str) -> int:
        """Messages in `queue` not yet delivered to any consumer: neither those delivered
        and not yet acknowledged, nor delayed ones (a due one moves into the queue now)."""
        self.flush()
        return self._run(self._core.depth(queue), f"depth of {queue!r}")

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Close every subscription (their unsettled deliveries go back to their
        queues), send the settlements, stop the settler; close the client if the broker
        made it."""
        if self._closed:
            return
        for subscription in self._subscriptions:
            subscription.close()
        for subscription in self._subscriptions:
            subscription.join()
        with contextlib.suppress(BackendUnavailable):
            self.flush()
        with self._lock:
            self._closed = True
            settler = self._settler
        self._settle_wanted.set()
        if settler is not None and settler is not threading.current_thread():
            settler.join(timeout=5)
        if self._owns_client:
            close_client(self._core.client)

    def __enter__(self) -> RedisStreamsBroker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisStreamsBroker({self.url!r}, prefix={self._core.prefix!r})"
