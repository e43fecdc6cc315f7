"""`DirectConnections`: the Redis limiter's own connections, one command and one reply each.

redis-py's ``execute_command`` wraps every call in a pool checkout that probes the
connection (one more ``recv``), a retry policy and metrics bookkeeping: about a third of a
loopback round trip. A rate-limit decision needs none of it, so the sync Redis store sends
its ``EVALSHA`` here instead, on connections made with the settings of the client's pool.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Any

__all__ = ["DirectConnections", "EXHAUSTED"]

EXHAUSTED: Any = object()
"""What `DirectConnections.call` returns when all ``max_connections`` are busy."""

# A connection idle this long is checked before it is used: a server restart, an idle
# timeout or CLIENT KILL closes it silently, and a decision sent on it would be lost.
_IDLE_CHECK_AFTER = 1.0

# One set of connections per redis-py pool, however many limiters use its client.
_SHARED: weakref.WeakKeyDictionary[Any, DirectConnections] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


class DirectConnections:
    """Connections of the limiters that share one redis-py connection pool.

    - Made on first use with the pool's current settings (host, credentials, TLS, ``db``,
      timeouts, protocol), at most the pool's ``max_connections`` of them; beyond that a
      call returns `EXHAUSTED` and the caller goes through the client instead.
    - A command is sent at most once: a connection idle for a second or more is checked
      before the send (and replaced if the server closed it); one that fails during the
      call is disconnected and dropped, and the error goes to the caller.
    - After a fork the child starts with none (it never touches the parent's sockets).
    - `close` disconnects the idle ones; one in use is dropped when its call ends.
    """

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        settings = pool.connection_kwargs
        self.encoding: str = settings.get("encoding", "utf-8")
        self.encoding_errors: str = settings.get("encoding_errors", "strict")
        self.limit: int = pool.max_connections
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()  # new in a forked child: the parent's may be held
        self._free: list[tuple[Any, float]] = []  # (connection, when it was last used)
        self._generation = 0
        self.open = 0
        self.made = 0

    @classmethod
    def for_client(cls, client: Any) -> DirectConnections | None:
        """The connections shared by the limiters of `client`'s pool; None for a client
        that must keep its own ``evalsha``: a Cluster, Sentinel or fake client, or one whose
        credentials are re-issued on its pool's connections (a streaming provider)."""
        import redis
        from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection

        pool: Any = getattr(client, "connection_pool", None)
        if (
            not isinstance(client, redis.Redis)
            or type(pool) not in (redis.ConnectionPool, redis.BlockingConnectionPool)
            or pool.connection_class not in (Connection, SSLConnection, UnixDomainSocketConnection)
            or _streams_credentials(pool.connection_kwargs.get("credential_provider"))
        ):
            return None
        with _SHARED_LOCK:
            direct = _SHARED.get(pool)
            if direct is None:
                direct = _SHARED[pool] = cls(pool)
            return direct

    def pack(self, *args: str) -> bytes:
        """`args` as one RESP command."""
        encoding, errors = self.encoding, self.encoding_errors
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode(encoding, errors)
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(parts)

    def call(self, command: bytes) -> Any:
        """Send a packed command and return its reply, or `EXHAUSTED`.

        Raises what redis-py raises: `ConnectionError` / `TimeoutError` (the connection is
        dropped), a `ResponseError` for an error reply (the connection stays, unless the
        server said READONLY: a demoted primary is left for a fresh connection).
        """
        from redis.exceptions import ReadOnlyError, ResponseError

        if self._pid != os.getpid():
            self._reset()
        checked_out = self._checkout()
        if checked_out is None:
            return EXHAUSTED
        connection, generation = checked_out
        keep = False
        try:
            connection.send_packed_command((command,))
            reply = connection.read_response()
            keep = True
        except ResponseError as exc:
            keep = not isinstance(exc, ReadOnlyError)
            raise
        finally:
            self._checkin(connection, generation, keep)
        return reply

    def _checkout(self) -> tuple[Any, int] | None:
        from redis.exceptions import ConnectionError

        generation = self._generation
        try:
            connection, last_used = self._free.pop()
        except IndexError:
            with self._lock:
                if self.open >= self.limit:
                    return None
                self.open += 1
                self.made += 1
            return self._pool.connection_class(**self._pool.connection_kwargs), generation
        if time.monotonic() - last_used >= _IDLE_CHECK_AFTER:
            try:
                stale = connection.can_read()  # closed by the server, or stray bytes
            except ConnectionError:
                stale = True
            if stale:
                connection.disconnect()  # the send connects afresh
        return connection, generation

    def _checkin(self, connection: Any, generation: int, keep: bool) -> None:
        with self._lock:
            if keep and generation == self._generation:
                self._free.append((connection, time.monotonic()))
                return
            self.open -= 1
        connection.disconnect()

    def close(self) -> None:
        """Disconnect the idle connections; those in use are dropped when their call ends."""
        with self._lock:
            self._generation += 1  # a connection checked out before this is not kept
        while True:
            try:  # pop one by one: a concurrent checkout takes each connection or not at all
                connection, _ = self._free.pop()
            except IndexError:
                return
            with self._lock:
                self.open -= 1
            connection.disconnect()


def _streams_credentials(provider: Any) -> bool:
    try:
        from redis.credentials import StreamingCredentialProvider
    except ImportError:  # redis-py before 6: no re-authentication of live connections
        return False
    return isinstance(provider, StreamingCredentialProvider)
