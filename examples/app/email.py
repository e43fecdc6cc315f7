"""A fake email provider: slow, sometimes failing, idempotent by key like real providers.

It keeps its log of sent emails in Redis when the app has one (so worker processes and
tests share it) and in memory otherwise. `send(..., idempotency_key=k)` sends at most once
per key, the way Postmark's or SES's idempotency keys do: a retry after a lost response
(or a worker killed after the provider accepted the email) does not send it again.
"""

from __future__ import annotations

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
        self._redis = redis
        self._prefix = f"{prefix}:email"
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._sent: dict[str, str] = {}
        self._attempts = 0
        self._deliveries = 0

    def send(self, to: str, subject: str, *, idempotency_key: str) -> str:
        """Send once per `idempotency_key`; returns the provider's message id."""
        self._count("attempts")
        time.sleep(self.latency / 2)
        with self._lock:
            failing = self._rng.random() < self.failure_rate
        if failing:
            raise ProviderUnavailable("email provider unavailable (simulated)")
        message_id = f"msg-{idempotency_key}"
        if self._redis is not None:
            fresh = self._redis.set(f"{self._prefix}:sent:{idempotency_key}", to, nx=True)
            if fresh:
                self._redis.rpush(f"{self._prefix}:log", f"{idempotency_key} {to} {subject}")
        else:
            with self._lock:
                fresh = idempotency_key not in self._sent
                if fresh:
                    self._sent[idempotency_key] = to
                    self._deliveries += 1
        # the response travels back: a caller killed now has had its email sent
        time.sleep(self.latency / 2)
        return message_id

    def _count(self, what: str) -> None:
        if self._redis is not None:
            self._redis.incr(f"{self._prefix}:{what}")
        else:
            with self._lock:
                self._attempts += 1

    def attempts(self) -> int:
        if self._redis is not None:
            return int(self._redis.get(f"{self._prefix}:attempts") or 0)
        return self._attempts

    def sent(self) -> list[str]:
        """One line per email actually delivered: ``"<key> <to> <subject>"``."""
        if self._redis is not None:
            return [v.decode() for v in self._redis.lrange(f"{self._prefix}:log", 0, -1)]
        with self._lock:
            return [f"{k} {to} Welcome" for k, to in self._sent.items()]
