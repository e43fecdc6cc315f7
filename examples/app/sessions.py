"""Server-side sessions: a cookie holds an id, the data lives in Redis (or memory).

With the data in Redis, any app process can serve any request: the app servers keep no
per-user state, so they scale by adding processes behind a load balancer.
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


class RedisSessions:
    """Sessions as JSON strings under ``<prefix>:session:<id>`` with a TTL.

    Redis unreachable: a session reads as empty and a save is dropped (logged), so the
    service keeps answering; a client then relies on the token in the response header.
    """

    def __init__(self, client: Any, prefix: str = "sp_app", ttl: int = 86_400) -> None:
        self._redis = client
        self._prefix = f"{prefix}:session:"
        self.ttl = ttl

    def load(self, sid: str) -> dict[str, Any] | None:
        try:
            raw = self._redis.get(self._prefix + sid)
        except Exception:  # redis.RedisError and OSError: fail open
            log.warning("session store unreachable; treating the session as empty")
            return None
        return None if raw is None else json.loads(raw)  # type: ignore[no-any-return]

    def save(self, sid: str, data: dict[str, Any]) -> None:
        try:
            self._redis.set(self._prefix + sid, json.dumps(data), ex=self.ttl)
        except Exception:
            log.warning("session store unreachable; session not saved")
