"""`DirectConnections`: Redis connections of our own for the hot commands, one command and
one reply each.

redis-py's ``execute_command`` wraps every call in a pool checkout that probes the
connection (one more ``recv``), a retry policy, metrics bookkeeping and a general reply
parser: together about a third of a loopback round trip. The rate limiter's ``EVALSHA``
and the cache's ``GET`` / ``MGET`` need none of it, so for a plain redis-py client they go
out here instead: written with one ``sendall``, read with one ``recv`` and parsed inline
when the reply arrived whole (the usual case), by a small RESP2 reader otherwise.

Connections are made by the client's pool's own connection class with its settings, so
the handshake (credentials, TLS, ``db``, client name, a Sentinel-managed master's address)
is redis-py's; only the request and the reply bypass it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import weakref
from typing import Any

__all__ = ["DirectConnections"]

# A connection idle this long is checked before it is used: a server restart, an idle
# timeout or CLIENT KILL closes it silently, and a command sent on it would be lost.
_IDLE_CHECK_AFTER = 1.0

# How long a call waits for a free connection when all `max_connections` are busy, unless
# the pool says (a BlockingConnectionPool's `timeout`; None there means no limit).
_DEFAULT_WAIT = 20.0

# Bytes asked of one recv: a whole reply for any ordinary value. A larger reply is read
# on in pieces of at most `_MAX_READ` (the size of each piece's buffer).
_READ_SIZE = 65536
_MAX_READ = 1 << 20

_CLOSED = "Connection closed by server."

# One set of connections per redis-py pool, however many limiters and caches use its
# client. Weak both ways: their users keep the connections alive, and the connections
# their pool (through its settings), so neither may be held from here.
_SHARED: weakref.WeakKeyDictionary[Any, weakref.ref[DirectConnections]] = (
    weakref.WeakKeyDictionary()
)
_SHARED_LOCK = threading.Lock()


class DirectConnections:
    """Connections shared by the limiters and caches of one redis-py connection pool.

    - Made on first use by the pool's connection class with its current settings (host,
      credentials, TLS, ``db``, timeouts; RESP2 on the wire whatever the client's
      ``protocol``), never more than the pool's ``max_connections``:
      with all of them busy a call waits for one, as a ``BlockingConnectionPool`` does (up
      to its ``timeout``, 20 s otherwise), then raises redis-py's ``ConnectionError``.
    - Connections to a Sentinel-managed master find it through the sentinels, as the
      client's own do (see `for_client`).
    - A command is sent at most once: a connection idle for a second or more is checked
      before the send (and replaced if the server closed it); one that fails during the
      call is disconnected and dropped, and the error goes to the caller.
    - After a fork the child starts with none (it never touches the parent's sockets).
    - `close` disconnects the idle ones; one in use is dropped when its call ends. They
      are disconnected as well once nothing uses them any more.
    """

    def __init__(self, pool: Any) -> None:
        self._pool = weakref.ref(pool)  # the users' clients keep it alive; not us
        settings = pool.connection_kwargs
        self.encoding: str = settings.get("encoding", "utf-8")
        self.encoding_errors: str = settings.get("encoding_errors", "strict")
        self.limit: int = pool.max_connections
        self._wait: float | None = getattr(pool, "timeout", _DEFAULT_WAIT)
        # A demoted Sentinel master answers READONLY: redis-py makes that a lost connection.
        self._readonly_is_lost: bool = bool(getattr(pool, "is_master", False))
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
        """The connections shared by the users of `client`'s pool; None for a client whose
        commands must go through it: a ``RedisCluster``, a fake, a pool of another class,
        one with redis-py's client-side cache (``cache_config``), or one whose credentials
        are re-issued on live connections (a streaming provider).

        A Sentinel-managed client (``Sentinel(...).master_for(name)``) qualifies: its
        connection class asks the sentinels for the master's address on every connect, and
        a READONLY reply (a demoted master) drops the connection as a ``ConnectionError``,
        so the next one is made to the new master.
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
            or getattr(pool, "cache", None) is not None  # redis-py's client-side cache
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

    def pack(self, *args: str | bytes) -> bytes:
        """`args` as one RESP command (a str encoded as the client encodes keys)."""
        encoding, errors = self.encoding, self.encoding_errors
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode(encoding, errors) if isinstance(arg, str) else arg
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(parts)

    def get(self, key: str) -> bytes | None:
        """``GET key`` (see `call`)."""
        data = key.encode(self.encoding, self.encoding_errors)
        value: bytes | None = self.call(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(data), data))
        return value

    def call(self, command: bytes) -> Any:
        """Send a packed command once and return its reply, never decoded: bytes for a
        bulk or simple string, None for nil, an int, or a list of these.

        Raises what redis-py raises: `ConnectionError` / `TimeoutError` (the connection is
        dropped; also when no connection came free in time), a `ResponseError` for an
        error reply, of the class redis-py gives it (`NoScriptError`...; the connection
        stays, unless the server said READONLY: a demoted primary is left for a fresh
        connection, and behind Sentinel the error is a `ConnectionError`).
        """
        if self._pid != os.getpid():
            self._reset()
        connection, generation, last_used = self._checkout()
        keep = False
        try:
            if time.monotonic() - last_used >= _IDLE_CHECK_AFTER:
                _drop_if_closed(connection)
            # The socket redis-py connected (and shook hands on) in connect(): the command
            # and its reply bypass the connection's parser, which never sees these bytes.
            sock = connection._sock  # not public in redis-py; pinned by tests/integration
            try:
                sock.sendall(command)
            except OSError as exc:
                raise _lost("writing to", exc) from exc
            try:
                data = sock.recv(_READ_SIZE)
                # A whole bulk string (GET, EVALSHA of our scripts): no reader needed.
                if data and data[0] == 36:  # b"$"
                    end = data.find(b"\r\n")
                    if end > 0:
                        size = int(data[1:end])
                        if end + size + 4 == len(data) and data.endswith(b"\r\n"):
                            keep = True
                            return data[end + 2 : -2]
                        if size == -1 and end + 2 == len(data):
                            keep = True
                            return None
                reply = _Reply(sock, data).read()
            except OSError as exc:
                raise _lost("reading from", exc) from exc
            except ValueError as exc:  # a length or an integer that is not a number
                from redis.exceptions import InvalidResponse

                raise InvalidResponse(f"Protocol Error: {exc}") from exc
            if not isinstance(reply, Exception):
                keep = True
                return reply
            from redis.exceptions import ConnectionError, ReadOnlyError

            keep = not isinstance(reply, ReadOnlyError)
            if not keep and self._readonly_is_lost:
                raise ConnectionError("The previous master is now a slave") from reply
            raise reply
        finally:
            self._checkin(connection, generation, keep)

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
                        f"all {self.limit} direct connections (the pool's max_connections) "
                        "stayed busy: raise max_connections"
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
        if pool is None:  # every user holds its client, and the client its pool
            raise RuntimeError("the connection pool of these direct connections is gone")
        connection = pool.connection_class(**_resp2(pool.connection_kwargs))
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


class _Reply:
    """One RESP2 reply read from a socket, starting with the bytes already received.

    `read` returns it as `DirectConnections.call` describes, an error reply as the
    (unraised) exception redis-py makes of it. It raises one that means the connection is
    unusable (``LOADING``, ``NOAUTH``...), `InvalidResponse` for bytes that are not one
    whole reply (`ValueError` where a length is not a number), and the socket's errors.
    """

    __slots__ = ("_data", "_pos", "_sock")

    def __init__(self, sock: socket.socket, data: bytes) -> None:
        if not data:
            from redis.exceptions import ConnectionError

            raise ConnectionError(_CLOSED)
        self._sock = sock
        self._data = bytearray(data)
        self._pos = 0

    def read(self) -> Any:
        reply = self._value()
        if self._pos != len(self._data):  # nothing may follow the reply of one command
            from redis.exceptions import InvalidResponse

            raise InvalidResponse("Protocol Error: bytes after the reply")
        return reply

    def _value(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._bulk(size)
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._value() for _ in range(count)]
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest
        if kind == b"-":
            from redis._parsers import BaseParser
            from redis.exceptions import ConnectionError

            text = rest.decode("utf-8", errors="replace")
            error: Exception = BaseParser.parse_error(text)  # type: ignore[no-untyped-call]
            if isinstance(error, ConnectionError):
                raise error
            return error
        from redis.exceptions import InvalidResponse

        raise InvalidResponse(f"Protocol Error: {line!r}")

    def _line(self) -> bytes:
        data, start = self._data, self._pos
        end = data.find(b"\r\n", start)
        while end < 0:
            searched = max(start, len(data) - 1)  # a CR may end what came so far
            self._receive(len(data) + 1)
            end = data.find(b"\r\n", searched)
        self._pos = end + 2
        return bytes(data[start:end])

    def _bulk(self, size: int) -> bytes:
        start = self._pos
        end = start + size
        self._receive(end + 2)
        data = self._data
        if data[end : end + 2] != b"\r\n":
            from redis.exceptions import InvalidResponse

            raise InvalidResponse("Protocol Error: a bulk string longer than announced")
        self._pos = end + 2
        return bytes(data[start:end])

    def _receive(self, total: int) -> None:
        """Read on until `total` bytes of the reply are here."""
        data, recv = self._data, self._sock.recv
        while len(data) < total:
            chunk = recv(min(max(total - len(data), _READ_SIZE), _MAX_READ))
            if not chunk:
                from redis.exceptions import ConnectionError

                raise ConnectionError(_CLOSED)
            data += chunk


def _lost(doing: str, exc: OSError) -> Exception:
    """redis-py's exception for a socket error while `doing` the socket."""
    from redis.exceptions import ConnectionError, TimeoutError

    if isinstance(exc, socket.timeout):
        return TimeoutError(f"Timeout {doing} socket")
    return ConnectionError(f"Error while {doing} socket: {exc}")


def _resp2(settings: dict[str, Any]) -> dict[str, Any]:
    """A pool's connection settings for a RESP2 connection, whatever the client speaks:
    the replies of the commands sent here read the same, and no push message (RESP3 only:
    redis-py 8's maintenance notifications, client tracking) can come between a command and
    its reply."""
    settings = {**settings, "protocol": 2}
    if "maint_notifications_config" in settings:  # redis-py 8: refused on RESP2
        settings["maint_notifications_config"] = None
    return settings


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
