"""Deliveries, their settlements and the consuming loop, shared by both Redis brokers.

A `Consumer` is one subscription: a name in the queue's consumer group, the deliveries
it holds, and `loop`, a flow (see `steps.py`) that fetches while there is room under the
prefetch and otherwise waits, either for a settlement (room again) or, with the queue
empty, in a blocking XREAD for new entries. The sync broker drives the loop on a thread
of its own, the async one as a task. Settling a delivery never does I/O: it is recorded
in the broker's `Settlements` and sent, batched, by the broker's settler.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from scalepatterns._steps import Flow
from scalepatterns.queue.broker import Delivery, Properties
from scalepatterns.queue.streams import scripts
from scalepatterns.queue.streams.envelope import read_entry
from scalepatterns.queue.streams.keys import GROUP, QueueKeys

__all__ = [
    "ACK",
    "Consumer",
    "ConsumerOptions",
    "DEAD",
    "GIVE_BACK",
    "Settlements",
    "StreamsDelivery",
    "Waker",
    "consumer_name",
    "fetched",
    "log_refused",
    "read_fetched",
    "send",
]

_log = logging.getLogger("scalepatterns.queue.redis")

ACK, GIVE_BACK, DEAD = "ack", "give_back", "dead"
_CHUNK = 1000  # ids per settling script call (Lua's unpack takes a few thousand)


def consumer_name(role: str = "c") -> str:
    """A consumer name unique to this subscription: host, process, role, random."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}:{uuid.uuid4().hex[:8]}"


class StreamsDelivery:
    """A message taken from a stream; `ack` and `reject` only record the settlement."""

    __slots__ = (
        "_done",
        "_settle",
        "body",
        "consumer",
        "entry_id",
        "keys",
        "properties",
        "redelivered",
        "routing_key",
        "stream",
        "taken_at",
    )

    def __init__(  # noqa: PLR0917 - the parts of one fetched entry
        self,
        settle: Callable[[StreamsDelivery, str], None],
        keys: QueueKeys,
        stream: str,
        entry_id: str,
        consumer: str,
        body: bytes,
        meta: bytes | None,
        redelivered: bool,
    ) -> None:
        self._settle = settle
        self._done = False
        self.keys = keys
        self.stream = stream
        self.entry_id = entry_id
        self.consumer = consumer
        self.taken_at = time.monotonic()
        properties, routing_key = read_entry(meta, keys.queue)
        self.body: bytes = body
        self.properties: Properties = properties
        self.routing_key: str = routing_key
        self.redelivered: bool = redelivered

    def ack(self) -> None:
        self._finish(ACK)

    def reject(self, *, requeue: bool) -> None:
        self._finish(GIVE_BACK if requeue else DEAD)

    def _finish(self, kind: str) -> None:
        if self._done:  # settled twice: ignored, like a stale delivery tag
            return
        self._done = True
        self._settle(self, kind)

    def __repr__(self) -> str:
        return f"StreamsDelivery({self.keys.queue!r}, {self.entry_id})"


class Settlements:
    """Settlements waiting to be sent, from any thread; `take` turns them into script
    calls, one per stream and kind; calls that could not be sent come back with `retry`."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str, str], tuple[QueueKeys, list[str]]] = {}
        self._retry: list[scripts.Call] = []

    def add(self, delivery: StreamsDelivery, kind: str) -> None:
        key = (kind, delivery.stream, delivery.consumer)
        with self._lock:
            entry = self._pending.get(key)
            if entry is None:
                self._pending[key] = (delivery.keys, [delivery.entry_id])
            else:
                entry[1].append(delivery.entry_id)

    def __bool__(self) -> bool:
        return bool(self._pending or self._retry)

    def take(self, consumer: str | None = None) -> list[scripts.Call]:
        """The calls for every settlement waiting, or only for those of `consumer` (which
        its loop sends; the rest, and calls to try again, are the settler's)."""
        with self._lock:
            if consumer is None:
                pending, self._pending = self._pending, {}
                calls, self._retry = self._retry, []
            else:
                pending = {k: v for k, v in self._pending.items() if k[2] == consumer}
                for key in pending:
                    del self._pending[key]
                calls = []
        for (kind, stream, owner), (keys, ids) in pending.items():
            for start in range(0, len(ids), _CHUNK):
                calls.append(self._call(kind, stream, owner, keys, ids[start : start + _CHUNK]))
        return calls

    def _call(
        self, kind: str, stream: str, consumer: str, keys: QueueKeys, ids: list[str]
    ) -> scripts.Call:
        if kind == ACK:
            return scripts.ACK, [stream], [GROUP, *ids]
        if kind == GIVE_BACK:
            return scripts.GIVE_BACK, [stream], [GROUP, consumer, *ids]
        dead = keys.dead(self._prefix)
        return scripts.DEAD, [stream, dead.meta, dead.stream()], [GROUP, consumer, *ids]

    def retry(self, calls: list[scripts.Call]) -> None:
        with self._lock:
            self._retry[:0] = calls


def send(client: Any, calls: list[scripts.Call]) -> Flow[None]:
    """Send settlement calls."""
    results, _ = yield from scripts.run_all(client, calls)
    log_refused(calls, results)


def log_refused(calls: list[scripts.Call], results: list[Any]) -> None:
    """Log the settlements the server refused (their queue was deleted meanwhile)."""
    for (script, keys, _args), result in zip(calls, results, strict=True):
        if isinstance(result, Exception):
            _log.warning("could not %s on %s: %s", script.name, keys[0], result)


class Waker(Protocol):
    """Wakes a consumer's loop: `set` from any thread; `wait` returns (or is awaitable)
    once set or after `timeout` seconds, and clears it."""

    def set(self) -> None: ...

    def wait(self, timeout: float) -> Any: ...


@dataclass(frozen=True)
class ConsumerOptions:
    visibility_timeout: float
    block: float
    reclaim_every: float
    connection_errors: tuple[type[BaseException], ...]


class Consumer:
    """One subscription to a queue (see the module)."""

    def __init__(  # noqa: PLR0917 - a subscription's parts, assembled by the broker core
        self,
        keys: QueueKeys,
        levels: int,
        prefetch: int,
        on_delivery: Callable[[Delivery], None],
        settlements: Settlements,
        waker: Waker,
        options: ConsumerOptions,
        on_settled: Callable[[], None],
    ) -> None:
        self.keys = keys
        self.name = consumer_name()
        self.prefetch = max(1, prefetch)
        self._on_delivery = on_delivery
        self._settlements = settlements
        self._on_settled = on_settled
        self.waker = waker
        self._options = options
        self._streams = keys.streams(levels)
        self._fetch_keys = [keys.meta, keys.delayed, *self._streams]
        self._lock = threading.Lock()
        self._held: dict[str, StreamsDelivery] = {}
        self.cancelled = False
        self.closed = False
        self._error: BaseException | None = None
        self.reading = False  # in a blocking XREAD: it fetches nothing, so need not be awaited
        self._warned_at = -1e9
        # While the loop waits (for room, or in XREAD for new entries) a settlement
        # wakes it and the settler; else the loop's next fetch carries it.
        self._waiting = False

    # -- from any thread ----------------------------------------------------------------

    def settle(self, delivery: StreamsDelivery, kind: str) -> None:
        with self._lock:
            if self._held.pop(delivery.entry_id, None) is None:
                return  # given back when the subscription closed: no longer ours
        held = time.monotonic() - delivery.taken_at
        if held > self._options.visibility_timeout:
            self._warn_slow(held)
        self._settlements.add(delivery, kind)
        if self._waiting:
            self._on_settled()
            self.waker.set()

    def _warn_slow(self, held: float) -> None:
        now = time.monotonic()
        if now - self._warned_at < 60:
            return
        self._warned_at = now
        _log.warning(
            "a message of %s was settled %.1fs after delivery, later than the "
            "visibility_timeout (%.1fs): another consumer may have taken it over and "
            "handled it too. Raise visibility_timeout above the slowest handler plus the "
            "time a message waits in the prefetch (or lower the prefetch)",
            self.keys.queue,
            held,
            self._options.visibility_timeout,
        )

    def stop(self, *, close: bool) -> list[StreamsDelivery]:
        """Stop fetching; with `close`, take back every unsettled delivery (returned, to
        be given back by the caller)."""
        with self._lock:
            self.cancelled = True
            taken: list[StreamsDelivery] = []
            if close:
                self.closed = True
                taken, self._held = list(self._held.values()), {}
        self.waker.set()
        return taken

    @property
    def held(self) -> int:
        return len(self._held)

    # -- the loop ---------------------------------------------------------------------

    def loop(self, client: Any) -> Flow[None]:
        """Fetch and deliver until stopped; survive lost connections (after one, the
        consumer's own pending entries are fetched again: a reply lost on the way may
        have held some)."""
        options = self._options
        recover = False
        failures = 0
        next_reclaim = time.monotonic()
        # Fetch in batches: with handlers settling one by one, wait for a quarter of the
        # prefetch to be free (or nothing held) rather than fetch one message at a time.
        batch = max(1, self.prefetch // 4)
        while not self.cancelled:
            if self._full(batch):
                yield from self._wait(options.block, batch)
                continue
            room = self.prefetch - len(self._held)
            now = time.monotonic()
            reclaim = now >= next_reclaim
            args = [
                GROUP,
                self.name,
                room,
                int(options.visibility_timeout * 1000) if reclaim else 0,
                1 if recover else 0,
            ]
            # The settlements waiting go out in the same round trip as the fetch.
            calls = self._settlements.take(self.name)
            try:
                reply = yield from self._fetch(client, calls, args)
            except options.connection_errors as exc:
                self._settlements.retry(calls)
                self._on_settled()
                failures += 1
                recover = True
                self._lost(exc, failures)
                yield from self._wait(min(2.0, 0.05 * 2**failures))
                continue
            recover, failures = False, 0
            if reclaim:
                next_reclaim = now + options.reclaim_every
            entries, wake, due = reply
            if due == -2:
                _log.warning(
                    "queue %s was deleted: its consumer %s stops", self.keys.queue, self.name
                )
                return
            self._deliver(entries)
            if len(entries) // 3 < room and wake:
                waits = [options.block, next_reclaim - now]
                if due >= 0:
                    waits.append(due / 1000)
                block_ms = int(min(waits) * 1000)
                if block_ms >= 1 and not (yield from self._read_new(client, wake, block_ms)):
                    failures += 1
                    self._lost(None, failures)
                    yield from self._wait(min(2.0, 0.05 * 2**failures))

    def _read_new(self, client: Any, wake: list[bytes], block_ms: int) -> Flow[bool]:
        """Block until entries arrive after `wake` or `block_ms` pass; False if the
        connection was lost (while the consumer still runs)."""
        self._start_waiting()
        self.reading = True
        try:
            yield client.xread, (dict(zip(self._streams, wake, strict=True)), 1, block_ms)
        except self._options.connection_errors as exc:
            self._error = exc
            return self.cancelled  # closing the broker closed the client under the read
        finally:
            self.reading = False
            self._waiting = False
        return True

    def _full(self, batch: int) -> bool:
        room = self.prefetch - len(self._held)
        return room <= 0 or (room < batch and bool(self._held))

    def _wait(self, timeout: float, batch: int | None = None) -> Flow[None]:
        """Wait for a settlement (or `timeout`); with `batch`, only while still too full
        to fetch, checked once settlements wake the loop (no wake-up is missed)."""
        self._start_waiting()
        if batch is None or self._full(batch):
            yield self.waker.wait, (timeout,)
        self._waiting = False

    def _start_waiting(self) -> None:
        self._waiting = True
        if self._settlements:  # settled while the loop was busy: the settler sends it
            self._on_settled()

    def forget(self, client: Any) -> Flow[None]:
        """Leave the group, once closed and holding nothing (best effort)."""
        try:
            yield from scripts.run(client, scripts.FORGET, self._streams, [GROUP, self.name])
        except Exception as exc:  # noqa: BLE001 - an idle consumer left behind is harmless
            _log.debug("consumer %s could not leave its group: %s", self.name, exc)

    def _fetch(self, client: Any, calls: list[scripts.Call], args: list[Any]) -> Flow[Any]:
        fetch: scripts.Call = (scripts.FETCH, self._fetch_keys, args)
        if not calls:
            return (yield from scripts.run(client, *fetch))
        results, _ = yield from scripts.run_all(client, [*calls, fetch])
        reply = results.pop()
        log_refused(calls, results)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _lost(self, error: BaseException | None, failures: int) -> None:
        log = _log.warning if failures == 1 else _log.debug
        error = error or self._error
        log("consumer of %s lost its connection (%s); trying again", self.keys.queue, error)

    def _deliver(self, entries: list[bytes]) -> None:
        fresh = []
        give_back = []
        with self._lock:
            for level, entry_id, body, meta, redelivered in fetched(entries):
                if entry_id in self._held:
                    continue  # reclaimed from ourselves: still held, already delivered
                delivery = StreamsDelivery(
                    self.settle,
                    self.keys,
                    self._streams[level],
                    entry_id,
                    self.name,
                    body,
                    meta,
                    redelivered,
                )
                if self.closed:
                    give_back.append(delivery)
                else:
                    self._held[entry_id] = delivery
                    fresh.append(delivery)
        for delivery in give_back:
            self._settlements.add(delivery, GIVE_BACK)
        if give_back:
            self._on_settled()
        for delivery in fresh:
            try:
                self._on_delivery(delivery)
            except Exception:  # noqa: BLE001, PERF203 - a callback must not end the subscription
                _log.exception("on_delivery failed for %s", self.keys.queue)


def fetched(entries: list[bytes]) -> Iterator[tuple[int, str, bytes, bytes, bool]]:
    """(priority, entry id, body, meta, redelivered) of each entry of a FETCH reply."""
    for index in range(0, len(entries), 3):
        level, redelivered, entry_id = entries[index].split(b":", 2)
        yield (
            int(level),
            entry_id.decode(),
            entries[index + 1],
            entries[index + 2],
            redelivered == b"1",
        )


def read_fetched(
    reply: Any, settle: Callable[[StreamsDelivery, str], None], keys: QueueKeys, consumer: str
) -> StreamsDelivery | None:
    """The first delivery of a FETCH reply (for `get`), or None."""
    for level, entry_id, body, meta, redelivered in fetched(reply[0]):
        return StreamsDelivery(
            settle, keys, keys.stream(level), entry_id, consumer, body, meta, redelivered
        )
    return None
