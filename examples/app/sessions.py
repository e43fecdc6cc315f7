"""Server-side sessions: a cookie holds an id, the data lives in Redis (or memory).

With the data in Redis, any app process can serve any request: the app servers keep no
per-user state, so they scale by adding processes behind a load balancer. The async build
calls `aload`/`asave` (a `redis.asyncio` client), the sync builds `load`/`save`.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from typing import Any, Protocol

COOKIE = "sp_session"
log = logging.getLogger("examples.app.sessions")


class SessionStore(Protocol):
    def load(self, sid: str) -> dict[str, Any] | None: ...
    def save(self, sid: str, data: dict[str, Any]) -> None: ...
    async def aload(self, sid: str) -> dict[str, Any] | None: ...
    async def asave(self, sid: str, data: dict[str, Any]) -> None: ...


def new_session_id() -> str:
    return secrets.token_urlsafe(24)


class MemorySessions:
    """One process's sessions (embedded defaults only: not shared between processes)."""

    def __init__(self, ttl: float = 86_400.0) -> None:
        self.ttl = ttl
        self._data: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def load(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._data.get(sid)
        if entry is None or entry[0] < time.monotonic():
            return None
        return json.loads(entry[1])  # type: ignore[no-any-return]

    def save(self, sid: str, data: dict[str, Any]) -> None:
        with self._lock:
            self._data[sid] = (time.monotonic() + self.ttl, json.dumps(data))

    async def aload(self, sid: str) -> dict[str, Any] | None:
        return self.load(sid)  # a dict read: nothing to wait for

    async def asave(self, sid: str, data: dict[str, Any]) -> None:
        self.save(sid, data)


class RedisSessions:
    """Sessions as JSON strings under ``<prefix>:session:<id>`` with a TTL.

    `client` is a `redis.Redis` (`load`, `save`) or a `redis.asyncio.Redis` (`aload`,
    `asave`). Redis unreachable: a session reads as empty and a save is dropped (logged),
    so the service keeps answering; a client then relies on the token in the response
    header.
    """

    def __init__(self, client: Any, prefix: str = "sp_app", ttl: int = 86_400) -> None:
        self._redis = client
        self._prefix = f"{prefix}:session:"
        self.ttl = ttl

    def load(self, sid: str) -> dict[str, Any] | None:
        try:
            raw = self._redis.get(self._prefix + sid)
        except Exception:  # redis.RedisError and OSError: fail open
            return _unreachable("treating the session as empty")
        return _decode(raw)

    def save(self, sid: str, data: dict[str, Any]) -> None:
        try:
            self._redis.set(self._prefix + sid, json.dumps(data), ex=self.ttl)
        except Exception:
            _unreachable("session not saved")

    async def aload(self, sid: str) -> dict[str, Any] | None:
        try:
            raw = await self._redis.get(self._prefix + sid)
        except Exception:
            return _unreachable("treating the session as empty")
        return _decode(raw)

    async def asave(self, sid: str, data: dict[str, Any]) -> None:
        try:
            await self._redis.set(self._prefix + sid, json.dumps(data), ex=self.ttl)
        except Exception:
            _unreachable("session not saved")


def _decode(raw: bytes | None) -> dict[str, Any] | None:
    return None if raw is None else json.loads(raw)  # type: ignore[no-any-return]


def _unreachable(consequence: str) -> None:
    log.warning("session store unreachable; %s", consequence)
