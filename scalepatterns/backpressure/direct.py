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

__all__ = ["DirectConnections"]

# A connection idle this long is checked before it is used: a server restart, an idle
# timeout or CLIENT KILL closes it silently, and a decision sent on it would be lost.
_IDLE_CHECK_AFTER = 1.0

# How long a call waits for a free connection when all `max_connections` are busy, unless
# the pool says (a BlockingConnectionPool's `timeout`; None there means no limit).
_DEFAULT_WAIT = 20.0

# One set of connections per redis-py pool, however many limiters use its client. Weak
# both ways: the limiters keep their connections alive, and the connections their pool
# (through its settings), so neither may be held from here.
_SHARED: weakref.WeakKeyDictionary[Any, weakref.ref[DirectConnections]] = (
    weakref.WeakKeyDictionary()
)
_SHARED_LOCK = threading.Lock()


class DirectConnections:
    """Connections of the limiters that share one redis-py connection pool.

    - Made on first use with the pool's current settings (host, credentials, TLS, ``db``,
      timeouts, protocol), never more than the pool's ``max_connections``: with all of
      them busy a call waits for one, as a ``BlockingConnectionPool`` does (up to its
      ``timeout``, 20 s otherwise), then raises redis-py's ``ConnectionError``.
    - Connections to a Sentinel-managed master find it through the sentinels, as the
      client's own do (see `for_client`).
    - A command is sent at most once: a connection idle for a second or more is checked
      before the send (and replaced if the server closed it); one that fails during the
      call is disconnected and dropped, and the error goes to the caller.
    - After a fork the child starts with none (it never touches the parent's sockets).
    - `close` disconnects the idle ones; one in use is dropped when its call ends. They
      are disconnected as well once no limiter uses them any more.
    """

    def __init__(self, pool: Any) -> None:
        self._pool = weakref.ref(pool)  # the limiters' clients keep it alive; not us
        settings = pool.connection_kwargs
        self.encoding: str = settings.get("encoding", "utf-8")
        self.encoding_errors: str = settings.get("encoding_errors", "strict")
        self.limit: int = pool.max_connections
        self._wait: float | None = getattr(pool, "timeout", _DEFAULT_WAIT)
        self._free: list[tuple[Any, float]] = []  # (connection, when it was last used)
        weakref.finalize(self, _disconnect_all, self._free)
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()  # new in a forked child: the parent's may be held
        self._returned = threading.Condition(self._lock)
        self._free.clear()  # in a child: the parent's, never to be used here
        self._generation = 0
        self.open = 0
        self.made = 0
        self._pid = os.getpid()  # last: another thread sees the new pid with the new state

    @classmethod
    def for_client(cls, client: Any) -> DirectConnections | None:
        """The connections shared by the limiters of `client`'s pool; None for a client
        that must keep its own ``evalsha``: a Cluster or fake client, or one whose
        credentials are re-issued on its pool's connections (a streaming provider).

        A Sentinel-managed client (``Sentinel(...).master_for(name)``) qualifies: its
        connection class asks the sentinels for the master's address on every connect, and
        turns a READONLY reply (a demoted master) into a ``ConnectionError``, so a
        connection dropped after a failover is replaced by one to the new master.
        """
        import redis
        from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection
        from redis.sentinel import (
            SentinelConnectionPool,
            SentinelManagedConnection,
            SentinelManagedSSLConnection,
        )

        pool: Any = getattr(client, "connection_pool", None)
        pools = (redis.ConnectionPool, redis.BlockingConnectionPool, SentinelConnectionPool)
        connections = (
            Connection,
            SSLConnection,
            UnixDomainSocketConnection,
            SentinelManagedConnection,
            SentinelManagedSSLConnection,
        )
        if (
            not isinstance(client, redis.Redis)
            or type(pool) not in pools
            or pool.connection_class not in connections
            or _streams_credentials(pool.connection_kwargs.get("credential_provider"))
        ):
            return None
        with _SHARED_LOCK:
            shared = _SHARED.get(pool)
            direct = shared() if shared is not None else None
            if direct is None:
                direct = cls(pool)
                _SHARED[pool] = weakref.ref(direct)
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
        """Send a packed command and return its reply.

        Raises what redis-py raises: `ConnectionError` / `TimeoutError` (the connection is
        dropped; also when no connection came free in time), a `ResponseError` for an
        error reply (the connection stays, unless the server said READONLY: a demoted
        primary is left for a fresh connection).
        """
        from redis.exceptions import ReadOnlyError, ResponseError

        if self._pid != os.getpid():
            self._reset()
        connection, generation, last_used = self._checkout()
        keep = False
        try:
            if time.monotonic() - last_used >= _IDLE_CHECK_AFTER:
                _drop_if_closed(connection)
            connection.send_packed_command((command,))
            reply = connection.read_response()
            keep = True
        except ResponseError as exc:
            keep = not isinstance(exc, ReadOnlyError)
            raise
        finally:
            self._checkin(connection, generation, keep)
        return reply

    def _checkout(self) -> tuple[Any, int, float]:
        """A free connection, a new one, or one that comes free: (it, generation, last used)."""
        from redis.exceptions import ConnectionError

        deadline = None if self._wait is None else time.monotonic() + self._wait
        with self._lock:
            while True:
                if self._free:
                    connection, last_used = self._free.pop()
                    return connection, self._generation, last_used
                if self.open < self.limit:
                    self.open += 1
                    self.made += 1
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ConnectionError(
                        f"all {self.limit} rate-limiter connections (the pool's "
                        "max_connections) stayed busy: raise max_connections"
                    )
                self._returned.wait(remaining)
            generation = self._generation
        try:
            return self._make(), generation, time.monotonic()
        except BaseException:
            with self._lock:
                self.open -= 1
                self._returned.notify()
            raise

    def _make(self) -> Any:
        pool = self._pool()
        if pool is None:  # a limiter holds its client, and the client its pool
            raise RuntimeError("the connection pool of this rate limiter is gone")
        connection = pool.connection_class(**pool.connection_kwargs)
        # Connected here, through the class's own connect(): a Sentinel-managed one finds
        # the master there; a first send would connect to its default address instead.
        connection.connect()
        return connection

    def _checkin(self, connection: Any, generation: int, keep: bool) -> None:
        with self._lock:
            if keep and generation == self._generation:
                self._free.append((connection, time.monotonic()))
                self._returned.notify()
                return
            self.open -= 1
            self._returned.notify()
        connection.disconnect()

    def close(self) -> None:
        """Disconnect the idle connections; those in use are dropped when their call ends."""
        with self._lock:
            self._generation += 1  # a connection checked out before this is not kept
            idle = list(self._free)
            self._free.clear()
            self.open -= len(idle)
            self._returned.notify_all()
        _disconnect_all(idle)


def _disconnect_all(idle: list[tuple[Any, float]]) -> None:
    for connection, _ in list(idle):
        connection.disconnect()


def _drop_if_closed(connection: Any) -> None:
    """Connect `connection` afresh if the server closed it (or left bytes on it) while it
    sat idle (a Sentinel-managed one asks the sentinels where the master is now)."""
    from redis.exceptions import ConnectionError

    try:
        stale = connection.can_read()
    except ConnectionError:
        stale = True
    if stale:
        connection.disconnect()
        connection.connect()


def _streams_credentials(provider: Any) -> bool:
    try:
        from redis.credentials import StreamingCredentialProvider
    except ImportError:  # redis-py before 6: no re-authentication of live connections
        return False
    return isinstance(provider, StreamingCredentialProvider)
