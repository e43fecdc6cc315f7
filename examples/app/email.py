"""A fake email provider: slow, sometimes failing, idempotent by key like real providers.

It keeps its log of sent emails in Redis when the app has one (so worker processes and
tests share it) and in memory otherwise. `send(..., idempotency_key=k)` sends at most once
per key, the way Postmark's or SES's idempotency keys do: a retry after a lost response
(or a worker killed after the provider accepted the email) does not send it again.
`asend` is the same call for the async build.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any


class ProviderUnavailable(ConnectionError):
    """The provider refused or dropped the call (retryable)."""


class FakeEmailProvider:
    def __init__(
        self,
        *,
        latency: float = 0.02,
        failure_rate: float = 0.0,
        redis: Any = None,
        prefix: str = "sp_app",
        seed: int | None = None,
    ) -> None:
        self.latency = latency
        self.failure_rate = failure_rate
        self._redis = redis  # redis.Redis, redis.asyncio.Redis (asend...) or None
        self._prefix = f"{prefix}:email"
        self._log = f"{self._prefix}:log"
        self._attempts_key = f"{self._prefix}:attempts"
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._sent: dict[str, str] = {}
        self._attempts = 0
        self._serving: set[asyncio.Future[str]] = set()  # asend's provider-side tasks

    def send(self, to: str, subject: str, *, idempotency_key: str) -> str:
        """Send once per `idempotency_key`; returns the provider's message id."""
        self._count_attempt()
        time.sleep(self.latency / 2)
        self._check_up()
        if self._redis is not None:
            if self._redis.set(self._sent_key(idempotency_key), to, nx=True):
                self._redis.rpush(self._log, _line(idempotency_key, to, subject))
        else:
            self._record(idempotency_key, to)
        # the response travels back: a caller killed now has had its email sent
        time.sleep(self.latency / 2)
        return _message_id(idempotency_key)

    async def asend(self, to: str, subject: str, *, idempotency_key: str) -> str:
        """`send` for the async build (a `redis.asyncio` client, if any).

        The provider's side runs as a task of its own, as a remote service would: a caller
        that gives up (a timeout cancels its await) does not stop an email the provider
        has started on.
        """
        await self._acount_attempt()
        serving = asyncio.ensure_future(self._aserve(to, subject, idempotency_key))
        self._serving.add(serving)
        serving.add_done_callback(self._serving.discard)
        return await asyncio.shield(serving)

    async def _aserve(self, to: str, subject: str, idempotency_key: str) -> str:
        await asyncio.sleep(self.latency / 2)
        self._check_up()
        if self._redis is not None:
            if await self._redis.set(self._sent_key(idempotency_key), to, nx=True):
                await self._redis.rpush(self._log, _line(idempotency_key, to, subject))
        else:
            self._record(idempotency_key, to)
        await asyncio.sleep(self.latency / 2)
        return _message_id(idempotency_key)

    def _check_up(self) -> None:
        with self._lock:
            failing = self._rng.random() < self.failure_rate
        if failing:
            raise ProviderUnavailable("email provider unavailable (simulated)")

    def _sent_key(self, idempotency_key: str) -> str:
        return f"{self._prefix}:sent:{idempotency_key}"

    def _record(self, idempotency_key: str, to: str) -> None:
        with self._lock:
            self._sent.setdefault(idempotency_key, to)

    def _count_attempt(self) -> None:
        if self._redis is not None:
            self._redis.incr(self._attempts_key)
        else:
            with self._lock:
                self._attempts += 1

    async def _acount_attempt(self) -> None:
        if self._redis is not None:
            await self._redis.incr(self._attempts_key)
        else:
            self._count_attempt()

    def attempts(self) -> int:
        """Calls of `send`/`asend` so far (a sync or no Redis client)."""
        if self._redis is not None:
            return int(self._redis.get(self._attempts_key) or 0)
        return self._attempts

    def sent(self) -> list[str]:
        """One line per email actually delivered: ``"<key> <to> <subject>"``."""
        if self._redis is not None:
            return [v.decode() for v in self._redis.lrange(self._log, 0, -1)]
        with self._lock:
            return [_line(k, to, "Welcome") for k, to in self._sent.items()]

    async def aattempts(self) -> int:
        """`attempts` with a `redis.asyncio` client."""
        if self._redis is not None:
            return int(await self._redis.get(self._attempts_key) or 0)
        return self.attempts()

    async def asent(self) -> list[str]:
        """`sent` with a `redis.asyncio` client."""
        if self._redis is not None:
            return [v.decode() for v in await self._redis.lrange(self._log, 0, -1)]
        return self.sent()


def _line(idempotency_key: str, to: str, subject: str) -> str:
    return f"{idempotency_key} {to} {subject}"


def _message_id(idempotency_key: str) -> str:
    return f"msg-{idempotency_key}"
