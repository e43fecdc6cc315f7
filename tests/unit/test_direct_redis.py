"""The shared direct Redis connections without a server: the RESP2 reply reader over a
socket pair, fed whole, byte by byte and in odd pieces, and which clients qualify."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis import exceptions

from scalepatterns._direct_redis import DirectConnections, _Reply
from tests.support.servers import free_port


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    yield ours, theirs
    ours.close()
    theirs.close()


def read(pair: tuple[socket.socket, socket.socket], wire: bytes, pieces: list[int]) -> Any:
    """`wire` sent in `pieces` (sizes; the rest goes last), read as one reply."""
    ours, theirs = pair
    chunks, at = [], 0
    for size in pieces:
        if at < len(wire):
            chunks.append(wire[at : at + size])
            at += size
    if at < len(wire):
        chunks.append(wire[at:])

    def send() -> None:
        for chunk in chunks[1:]:
            theirs.sendall(chunk)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        return _Reply(ours, chunks[0]).read()
    finally:
        sender.join()


REPLIES: list[tuple[bytes, Any]] = [
    (b"$5\r\nhello\r\n", b"hello"),
    (b"$0\r\n\r\n", b""),
    (b"$-1\r\n", None),
    (b"$4\r\na\r\nb\r\n", b"a\r\nb"),  # CR LF inside a value is data
    (b"*3\r\n$1\r\na\r\n$-1\r\n$2\r\nbc\r\n", [b"a", None, b"bc"]),
    (b"*0\r\n", []),
    (b"*-1\r\n", None),
    (b"*2\r\n*1\r\n:7\r\n+OK\r\n", [[7], b"OK"]),
    (b":-12\r\n", -12),
    (b"+PONG\r\n", b"PONG"),
]


@pytest.mark.parametrize(("wire", "expected"), REPLIES)
def test_a_reply_read_whole_or_byte_by_byte_is_the_same(
    pair: tuple[socket.socket, socket.socket], wire: bytes, expected: Any
) -> None:
    assert read(pair, wire, []) == expected
    assert read(pair, wire, [1] * len(wire)) == expected


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.binary(max_size=300)), max_size=6),
    st.lists(st.integers(1, 40), max_size=30),
)
def test_an_mget_reply_in_any_pieces_reads_back_the_values(
    values: list[bytes | None], pieces: list[int]
) -> None:
    wire = b"*%d\r\n" % len(values) + b"".join(
        b"$-1\r\n" if v is None else b"$%d\r\n%s\r\n" % (len(v), v) for v in values
    )
    ours, theirs = socket.socketpair()
    try:
        ours.settimeout(5)
        assert read((ours, theirs), wire, pieces) == values
    finally:
        ours.close()
        theirs.close()


def test_a_value_larger_than_one_read_arrives_whole(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    value = bytes(range(256)) * 20_000  # 5 MB: many reads, each at most 1 MiB asked
    assert read(pair, b"$%d\r\n%s\r\n" % (len(value), value), [3, 70_000]) == value


def test_error_replies_become_the_exceptions_redis_py_makes(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    wrongtype = read(pair, b"-WRONGTYPE Operation against a key\r\n", [4])
    assert type(wrongtype) is exceptions.ResponseError  # returned: the caller raises it
    assert str(wrongtype) == "WRONGTYPE Operation against a key"
    noscript = read(pair, b"-NOSCRIPT No matching script.\r\n", [])
    assert isinstance(noscript, exceptions.NoScriptError)
    assert isinstance(read(pair, b"-READONLY You can't write\r\n", []), exceptions.ReadOnlyError)
    # An error that means the connection is unusable is raised at once, as redis-py does.
    with pytest.raises(exceptions.BusyLoadingError):
        read(pair, b"-LOADING Redis is loading the dataset in memory\r\n", [])


@pytest.mark.parametrize(
    "wire",
    [
        b"%3\r\n",  # a RESP3 map: never asked for on these connections
        b"$3\r\nabcd\r\n",  # longer than announced
        b"$2\r\nab\r\n+extra\r\n",  # a second reply after the one asked for
    ],
)
def test_bytes_that_are_not_one_reply_are_a_protocol_error(
    pair: tuple[socket.socket, socket.socket], wire: bytes
) -> None:
    with pytest.raises(exceptions.InvalidResponse):
        read(pair, wire, [])


def test_a_reply_cut_short_by_the_server_is_a_connection_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(exceptions.ConnectionError, match="closed by server"):
        _Reply(ours, b"$10\r\nabc").read()
    with pytest.raises(exceptions.ConnectionError, match="closed by server"):
        _Reply(ours, b"")


def test_plain_and_sentinel_managed_clients_share_direct_connections_others_use_the_client() -> (
    None
):
    from redis.credentials import StreamingCredentialProvider
    from redis.sentinel import Sentinel

    port = free_port()  # nothing listens: none of this connects
    plain = redis.Redis(port=port)
    direct = DirectConnections.for_client(plain)
    assert direct is not None
    assert DirectConnections.for_client(plain) is direct  # one set per pool
    assert DirectConnections.for_client(redis.Redis(port=port)) is not direct  # its own pool
    blocking = redis.Redis(connection_pool=redis.BlockingConnectionPool(port=port))
    assert DirectConnections.for_client(blocking) is not None
    assert DirectConnections.for_client(redis.Redis(port=port, protocol=3)) is not None
    assert DirectConnections.for_client(redis.Redis(unix_socket_path="/nowhere")) is not None
    managed = Sentinel([("127.0.0.1", port)]).master_for("mymaster")
    assert DirectConnections.for_client(managed) is not None

    class Streaming(StreamingCredentialProvider):
        def get_credentials(self) -> tuple[str]:
            return ("secret",)

        def on_next(self, callback: Any) -> None: ...

        def on_error(self, callback: Any) -> None: ...

        def is_streaming(self) -> bool:
            return True

    assert DirectConnections.for_client(fakeredis.FakeRedis()) is None
    assert DirectConnections.for_client(redis.asyncio.Redis(port=port)) is None
    streaming = redis.Redis(port=port, credential_provider=Streaming())
    assert DirectConnections.for_client(streaming) is None
    assert DirectConnections.for_client(object()) is None


def test_a_client_with_redis_py_client_side_caching_keeps_its_own_reads() -> None:
    from redis.cache import CacheConfig

    cached = redis.Redis(port=free_port(), protocol=3, cache_config=CacheConfig())
    assert DirectConnections.for_client(cached) is None
