"""Wires the blocks together: databases, cache, limiter, broker, event bus, email provider.

`Services.build(settings)` is the one place that decides which engine each block runs on:
the embedded default, or the real server named by an environment variable; and, for the
async build, the asyncio client of each (`redis.asyncio`, `AsyncEngine`s,
`AsyncRabbitMQBroker`). The blocks themselves take either kind of client: `Cache.redis`,
`RateLimiter(redis=...)`, `RedisDedupStore` and `resilient(...)` are built the same way.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from examples.app.db import Databases, QueryCounter
from examples.app.email import FakeEmailProvider
from examples.app.sessions import MemorySessions, RedisSessions, SessionStore
from examples.app.settings import Settings
from scalepatterns.events import Event, Listeners

SIGNED_UP = "user.signed_up"
EMAIL_GROUP = "welcome-email"
ANALYTICS_GROUP = "analytics"


class MessageStats:
    """Counts the queue's events of one app: handled, retried, dead-lettered, duplicates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.counts[type(event).__name__] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "processed": self.counts["MessageHandled"],
                "retried": self.counts["MessageRetried"],
                "dead_lettered": self.counts["MessageDeadLettered"],
                "duplicates": self.counts["MessageDuplicate"],
            }


@dataclass
class Services:
    settings: Settings
    listeners: Listeners
    databases: Databases
    provider: FakeEmailProvider
    sessions: SessionStore
    redis: Any = None  # redis.Redis, or redis.asyncio.Redis in the async build
    cache: Any = None
    limiter: Any = None
    broker: Any = None  # (Async)MemoryBroker or (Async)RabbitMQBroker
    bus: Any = None  # EventBus, or AsyncEventBus in the async build
    send_email: Any = None  # the provider's send (asend) behind timeout, retry and breaker
    breaker: Any = None
    message_stats: MessageStats = field(default_factory=MessageStats)
    relays: list[Any] = field(default_factory=list)
    analytics: Counter[str] = field(default_factory=Counter)

    @classmethod
    def build(cls, settings: Settings) -> Services:
        """Wire every block; provisions the shard databases (sync I/O: the async build
        calls it in a thread). The asyncio clients connect on first use, on that loop."""
        listeners = Listeners()
        redis = _redis_client(settings)
        services = cls(
            settings=settings,
            listeners=listeners,
            databases=Databases(settings, QueryCounter(), listeners),
            provider=FakeEmailProvider(
                latency=settings.email_latency,
                failure_rate=settings.email_failure_rate,
                redis=redis,
                prefix=settings.prefix,
            ),
            sessions=RedisSessions(redis, settings.prefix)
            if redis is not None
            else MemorySessions(),
            redis=redis,
        )
        services._wire_email()
        if not settings.naive:
            services._wire_cache()
            services._wire_limiter()
            services._wire_queue()
        return services

    # -- the blocks -------------------------------------------------------------------

    def _wire_cache(self) -> None:
        from scalepatterns.cache import Cache

        s = self.settings
        if self.redis is not None:
            self.cache = Cache.redis(
                self.redis, namespace=f"{s.prefix}_cache", ttl=s.cache_ttl, listeners=self.listeners
            )
        else:
            self.cache = Cache.memory(
                maxsize=100_000,
                ttl=s.cache_ttl,
                namespace=f"{s.prefix}_cache",
                listeners=self.listeners,
            )

    def _wire_limiter(self) -> None:
        from scalepatterns.backpressure import RateLimiter

        s = self.settings
        self.limiter = RateLimiter(
            s.rate,
            burst=s.burst,
            redis=self.redis,
            prefix=f"{s.prefix}:rl:",
            name="api",
            listeners=self.listeners,
        )

    def _wire_email(self) -> None:
        if self.settings.naive:
            self.send_email = self.provider.send  # inline, unguarded: the naive way
            return
        from scalepatterns.resilience import CircuitBreaker, resilient, retry, timeout

        self.breaker = CircuitBreaker(
            name="email-provider",
            minimum_calls=10,
            window=20,
            cooldown=5.0,
            listeners=self.listeners,
        )
        # the same policies wrap `def send` and `async def asend` (where the timeout
        # cancels the awaiting caller instead of abandoning a thread)
        send = self.provider.asend if self.settings.asynchronous else self.provider.send
        self.send_email = resilient(
            timeout=timeout(self.settings.email_timeout, listeners=self.listeners),
            retry=retry(
                on=(ConnectionError, TimeoutError),
                attempts=3,
                backoff=0.05,
                max_backoff=0.5,
                listeners=self.listeners,
            ),
            breaker=self.breaker,
        )(send)

    def _wire_queue(self) -> None:
        s = self.settings
        exchange = f"{s.prefix}.events"
        if s.asynchronous:
            from scalepatterns.queue import AsyncEventBus, AsyncMemoryBroker, AsyncRabbitMQBroker

            self.broker = (
                AsyncRabbitMQBroker(s.amqp_url, listeners=self.listeners)
                if s.amqp_url
                else AsyncMemoryBroker()
            )
            self.bus = AsyncEventBus(self.broker, exchange=exchange, listeners=self.listeners)
            return
        from scalepatterns.queue import EventBus, MemoryBroker, RabbitMQBroker

        self.broker = (
            RabbitMQBroker(s.amqp_url, listeners=self.listeners) if s.amqp_url else MemoryBroker()
        )
        self.bus = EventBus(self.broker, exchange=exchange, listeners=self.listeners)

    # -- the workers ------------------------------------------------------------------

    def _worker_groups(self) -> list[tuple[str, Any, str, dict[str, Any]]]:
        """(pattern, handler, group, options) of the welcome-email and analytics groups;
        their queue events are counted in `message_stats` from here on."""
        from examples.app.workers import analytics_handler, welcome_email_handler
        from scalepatterns.queue import (
            MemoryDedupStore,
            MessageDeadLettered,
            MessageDuplicate,
            MessageHandled,
            MessageRetried,
            RedisDedupStore,
            RetryPolicy,
        )

        s = self.settings
        self.listeners.add(
            self.message_stats,
            MessageHandled,
            MessageRetried,
            MessageDeadLettered,
            MessageDuplicate,
        )
        # One store for both groups: a worker's marks are per queue, so the same event id
        # is handled once by each group. With a redis.asyncio client it is an async store.
        dedup: Any = (
            RedisDedupStore(self.redis, prefix=f"{s.prefix}:dedup:")
            if self.redis is not None
            else MemoryDedupStore()
        )
        policy = RetryPolicy(
            attempts=s.retry_attempts, wait=lambda attempt: s.retry_base * 2 ** (attempt - 1)
        )
        options = {"retry": policy, "dedup": dedup, "in_progress_ttl": s.in_progress_ttl}
        return [
            (SIGNED_UP, welcome_email_handler(self), EMAIL_GROUP, {**options, "concurrency": 4}),
            ("user.*", analytics_handler(self), ANALYTICS_GROUP, {**options, "concurrency": 2}),
        ]

    def _relay_options(self) -> dict[str, Any]:
        # PostgreSQL wakes the relays with NOTIFY (the poll is a fallback); SQLite has
        # only the poll, kept short so the welcome email is prompt
        poll = 1.0 if self.settings.postgres_url else 0.2
        return {"poll_interval": poll, "listeners": self.listeners}

    def start_relays(self) -> None:
        """An outbox relay per shard database, publishing its signup events (on threads).

        Every app server runs them; several relays share a shard's outbox safely."""
        from examples.app.db import OUTBOX
        from scalepatterns.outbox import OutboxRelay

        self.relays = [
            OutboxRelay(OUTBOX, engine, self.bus, **self._relay_options()).start()
            for engine in self.databases.primaries.values()
        ]

    def astart_relays(self) -> None:
        """`start_relays` for the async build: the relays are tasks on the running loop."""
        from examples.app.db import OUTBOX
        from scalepatterns.outbox import AsyncOutboxRelay

        self.relays = [
            AsyncOutboxRelay(OUTBOX, engine, self.bus, **self._relay_options()).start()
            for engine in self.databases.primaries.values()
        ]

    def start_workers(self) -> None:
        """Subscribe the welcome-email and analytics groups and start them (in this process)."""
        for pattern, handler, group, options in self._worker_groups():
            self.bus.subscribe(pattern, handler, group=group, **options)
        self.bus.start()

    async def astart_workers(self) -> None:
        """`start_workers` for the async build: the workers are tasks on the running loop."""
        for pattern, handler, group, options in self._worker_groups():
            await self.bus.subscribe(pattern, handler, group=group, **options)
        await self.bus.start()

    def dead_letters(self) -> int:
        from scalepatterns.queue import DeadLetters

        if self.bus is None:
            return 0
        return int(DeadLetters(self.broker, self.bus.queue_of(EMAIL_GROUP)).count())

    async def adead_letters(self) -> int:
        from scalepatterns.queue import AsyncDeadLetters

        return int(await AsyncDeadLetters(self.broker, self.bus.queue_of(EMAIL_GROUP)).count())

    def close(self) -> None:
        for relay in self.relays:
            relay.stop()
        if self.bus is not None:
            self.bus.stop(5)
        if self.broker is not None:
            self.broker.close()
        if self.cache is not None:
            self.cache.close()
        self.databases.dispose()
        if self.redis is not None:
            self.redis.close()

    async def aclose(self) -> None:
        """`close` for the async build."""
        for relay in self.relays:
            await relay.stop()
        await self.bus.stop(5)
        await self.broker.close()
        await self.cache.aclose()
        await self.databases.adispose()
        if self.redis is not None:
            await self.redis.aclose()


def _redis_client(settings: Settings) -> Any:
    if not settings.redis_url:
        return None
    if settings.asynchronous:
        import redis.asyncio

        return redis.asyncio.Redis.from_url(settings.redis_url, socket_timeout=2.0)
    import redis

    return redis.Redis.from_url(settings.redis_url, socket_timeout=2.0)
