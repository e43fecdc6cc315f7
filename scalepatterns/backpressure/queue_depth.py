"""`QueueBackpressure`: hold producers back while a queue is above its high watermark.

The gate reads a queue's depth from a *depth source* (any callable returning an int) and
keeps a throttled flag with hysteresis: it turns on when the depth reaches `high` and off
only when the depth is back at or below `low`, so producers do not flap around one number.
While throttled, `admit()` blocks (``mode="block"``), raises `QueueFull`
(``mode="reject"``) or drops low-priority work (``mode="shed"``).

Depth sources shipped here: `RedisListDepth` (LLEN), `RedisStreamDepth` (XLEN) and
`RabbitMQQueueDepth` (a passive ``queue_declare``'s message count, through pika).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from scalepatterns._checks import seconds
from scalepatterns._deps import require
from scalepatterns._redis_url import client_from_url
from scalepatterns.backpressure.events import QueueReleased, QueueThrottled, WorkShed
from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.errors import BackendUnavailable, ConfigurationError, QueueFull
from scalepatterns.events import Listeners, default_listeners

__all__ = ["QueueBackpressure", "RabbitMQQueueDepth", "RedisListDepth", "RedisStreamDepth"]

_MODES = ("block", "reject", "shed")


class QueueBackpressure:
    """Slow producers down while a queue is deeper than its consumers can drain.

    Args:
        depth_source: a callable returning the queue's current depth (messages waiting).
        high: depth at which producers are held back (>= 1).
        low: depth at which they may go on again (0 <= low < high; default ``high // 2``).
        mode: ``"block"`` (wait until released, up to `timeout`), ``"reject"`` (raise
            `QueueFull`) or ``"shed"`` (drop work whose priority is >= `shed_priority`; more
            important work still goes through).
        queue: the queue's name, for errors and events.
        check_every: seconds a depth reading is reused (0: read on every `admit`).
        wait_interval: seconds between depth readings while blocked.
        timeout: seconds `admit` blocks before raising `QueueFull` (None: no bound).

    ```python
    from scalepatterns import QueueBackpressure, QueueFull

    depth = [0]
    gate = QueueBackpressure(lambda: depth[0], high=100, low=20, mode="reject", queue="jobs")
    assert gate.admit()
    depth[0] = 100
    try:
        gate.admit()
    except QueueFull as exc:
        assert (exc.queue, exc.depth) == ("jobs", 100)
    depth[0] = 50                       # below high but above low: still throttled
    assert gate.throttled and not gate.would_admit()
    depth[0] = 20
    assert gate.admit() and not gate.throttled
    ```
    """

    def __init__(
        self,
        depth_source: Callable[[], int],
        *,
        high: int,
        low: int | None = None,
        mode: str = "block",
        queue: str = "queue",
        shed_priority: int = 1,
        check_every: float = 0.0,
        wait_interval: float = 0.05,
        timeout: float | None = None,
        clock: Clock = SYSTEM_CLOCK,
        listeners: Listeners | None = None,
    ) -> None:
        if not callable(depth_source):
            raise TypeError(
                "depth_source= takes a callable returning the queue depth "
                "(e.g. RedisListDepth(client, key) or RabbitMQQueueDepth(url, queue))"
            )
        if isinstance(high, bool) or not isinstance(high, int) or high < 1:
            raise ConfigurationError("high", high, "an integer >= 1")
        low = high // 2 if low is None else low
        if isinstance(low, bool) or not isinstance(low, int) or not 0 <= low < high:
            raise ConfigurationError("low", low, f"an integer with 0 <= low < high ({high})")
        if mode not in _MODES:
            raise ConfigurationError("mode", mode, f"one of {', '.join(_MODES)}")
        seconds("check_every", check_every)
        seconds("wait_interval", wait_interval, positive=True)
        seconds("timeout", timeout, allow_none=True)
        if isinstance(shed_priority, bool) or not isinstance(shed_priority, int):
            raise ConfigurationError(
                "shed_priority", shed_priority, "an integer (work at or above it is shed)"
            )
        self.depth_source = depth_source
        self.high = high
        self.low = low
        self.mode = mode
        self.queue = queue
        self.shed_priority = shed_priority
        self.check_every = float(check_every)
        self.wait_interval = float(wait_interval)
        self.timeout = timeout
        self._clock = clock
        self._listeners = listeners if listeners is not None else default_listeners
        self._lock = threading.Lock()
        self._throttled = False
        self._depth = 0
        self._read_at: float | None = None
        self.shed = 0
        self.rejected = 0
        self.blocked_seconds = 0.0

    @property
    def throttled(self) -> bool:
        """Whether producers are held back (from the latest depth reading)."""
        return self._throttled

    @property
    def depth(self) -> int:
        """The latest depth reading."""
        return self._depth

    def observe(self, depth: int) -> bool:
        """Feed a depth reading into the hysteresis; returns whether it is throttled now."""
        event: QueueThrottled | QueueReleased | None = None
        with self._lock:
            self._depth = depth
            if not self._throttled and depth >= self.high:
                self._throttled = True
                event = QueueThrottled(self.queue, depth, self.high)
            elif self._throttled and depth <= self.low:
                self._throttled = False
                event = QueueReleased(self.queue, depth, self.low)
            throttled = self._throttled
        if event is not None and self._listeners.active:
            self._listeners.emit(event)
        return throttled

    def _refresh(self, force: bool = False) -> bool:
        now = self._clock.monotonic()
        if (
            not force
            and self._read_at is not None
            and self.check_every > 0
            and now - self._read_at < self.check_every
        ):
            return self._throttled
        depth = self.depth_source()
        self._read_at = now
        return self.observe(int(depth))

    def would_admit(self, priority: int = 0) -> bool:
        """Whether `admit(priority)` would let work through right now without waiting."""
        if not self._refresh():
            return True
        return self.mode == "shed" and priority < self.shed_priority

    def _shed_or_reject(self, priority: int) -> bool | None:
        """The decision while throttled in reject/shed mode; None in block mode."""
        if self.mode == "reject":
            self.rejected += 1
            raise QueueFull(self.queue, self._depth, self.wait_interval)
        if self.mode == "shed":
            if priority < self.shed_priority:
                return True
            self.shed += 1
            if self._listeners.active:
                self._listeners.emit(WorkShed(self.queue, priority, "queue"))
            return False
        return None

    def _decide_now(self, priority: int) -> bool | None:
        """The decision without waiting, or None when the caller must block."""
        if not self._refresh():
            return True
        return self._shed_or_reject(priority)

    def _check_waited(self, started: float, limit: float | None) -> None:
        waited = self._clock.monotonic() - started
        if limit is not None and waited >= limit:
            self.blocked_seconds += waited
            raise QueueFull(self.queue, self._depth, self.wait_interval)

    def _released(self, started: float) -> bool:
        self.blocked_seconds += self._clock.monotonic() - started
        return True

    def admit(self, priority: int = 0, timeout: float | None = None) -> bool:
        """Ask to put one piece of work on the queue.

        Returns True when the work may be published, False when it was shed. In block
        mode, waits while throttled (up to `timeout`, default: the gate's).

        Raises:
            QueueFull: in reject mode while throttled, or when blocking ran past `timeout`.
        """
        decided = self._decide_now(priority)
        if decided is not None:
            return decided
        started, limit = self._clock.monotonic(), self.timeout if timeout is None else timeout
        while True:
            self._check_waited(started, limit)
            self._clock.sleep(self.wait_interval)
            if not self._refresh(force=True):
                return self._released(started)

    async def aadmit(self, priority: int = 0, timeout: float | None = None) -> bool:
        """`admit` for async code: the depth source is called inline, waiting suspends."""
        decided = self._decide_now(priority)
        if decided is not None:
            return decided
        started, limit = self._clock.monotonic(), self.timeout if timeout is None else timeout
        while True:
            self._check_waited(started, limit)
            await self._clock.asleep(self.wait_interval)
            if not self._refresh(force=True):
                return self._released(started)

    def __repr__(self) -> str:
        state = "throttled" if self._throttled else "open"
        return (
            f"QueueBackpressure({self.queue!r}, {state}, depth={self._depth}, "
            f"high={self.high}, low={self.low}, mode={self.mode!r})"
        )


class _RedisDepth:
    command = ""

    def __init__(self, client: Any, key: str) -> None:
        if isinstance(client, str):
            client = client_from_url(client, parameter="client", feature=type(self).__name__)
        self.client = client
        self.key = key
        redis = require("redis", extra="redis", feature=type(self).__name__)
        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)

    def __call__(self) -> int:
        try:
            return int(self.client.execute_command(self.command, self.key))
        except self._errors as exc:
            raise BackendUnavailable("redis", f"{self.command} {self.key!r} failed: {exc}") from exc

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key={self.key!r})"


class RedisListDepth(_RedisDepth):
    """Depth of a Redis list (``LLEN key``) through a synchronous redis-py client (or one
    made from a URL)."""

    command = "LLEN"


class RedisStreamDepth(_RedisDepth):
    """Depth of a Redis stream (``XLEN key``) through a synchronous redis-py client (or one
    made from a URL)."""

    command = "XLEN"


class RabbitMQQueueDepth:
    """Messages ready in a RabbitMQ queue, from a passive ``queue_declare`` (pika).

    Keeps its own connection (opened on first use, reopened after a failure); call
    `close()` when done. The count excludes messages delivered but not yet acknowledged.

    Args:
        url: an AMQP URL such as ``amqp://guest:guest@localhost:5672/%2F``.
        queue: the queue to watch (it must exist; a passive declare never creates it).
    """

    def __init__(self, url: str, queue: str) -> None:
        self._url = url
        self.queue = queue
        self._connection: Any = None
        self._channel: Any = None
        # Producer threads read the depth concurrently; a pika connection is not thread-safe.
        self._lock = threading.RLock()

    def __call__(self) -> int:
        pika = require("pika", extra="rabbitmq", feature="RabbitMQQueueDepth")
        with self._lock:
            return self._read(pika)

    def _read(self, pika: Any) -> int:
        try:
            if self._channel is None or not self._channel.is_open:
                self.close()
                self._connection = pika.BlockingConnection(pika.URLParameters(self._url))
                self._channel = self._connection.channel()
            frame = self._channel.queue_declare(queue=self.queue, passive=True)
            return int(frame.method.message_count)
        except pika.exceptions.AMQPError as exc:
            self.close()
            raise BackendUnavailable(
                "rabbitmq", f"cannot read the depth of queue {self.queue!r}: {exc!r}"
            ) from exc

    def close(self) -> None:
        """Close the connection (it reopens on the next reading)."""
        with self._lock:
            connection, self._connection, self._channel = self._connection, None, None
            if connection is not None and connection.is_open:
                try:
                    connection.close()
                except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is gone
                    return

    def __repr__(self) -> str:
        return f"RabbitMQQueueDepth(queue={self.queue!r})"
