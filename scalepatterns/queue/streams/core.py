"""What both Redis Streams brokers do, as flows (see `steps.py`): the sync broker runs
them with `drive` on a redis-py client, the async one with `adrive` on a
``redis.asyncio`` client. Only waiting and threads differ between the two brokers.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from scalepatterns._deps import require
from scalepatterns._steps import Flow, R
from scalepatterns.errors import BackendUnavailable, ConfigurationError
from scalepatterns.queue.broker import (
    Delivery,
    Outgoing,
    QueueSpec,
    delay_queue,
    delay_tier_ms,
)
from scalepatterns.queue.errors import ConnectionLost, PublishError, TopologyConflict
from scalepatterns.queue.streams import scripts
from scalepatterns.queue.streams.consumer import (
    Consumer,
    ConsumerOptions,
    Settlements,
    StreamsDelivery,
    Waker,
    consumer_name,
    read_fetched,
    send,
)
from scalepatterns.queue.streams.envelope import entry_meta
from scalepatterns.queue.streams.keys import GROUP, MAX_LEVEL, QueueKeys, exchange_key
from scalepatterns.queue.streams.settings import StreamsSettings, is_cluster
from scalepatterns.queue.topics import topic_matches

__all__ = ["StreamsCore"]

_log = logging.getLogger("scalepatterns.queue.redis")
_BATCH = 500  # messages per publishing script call: a short pause of the server each
_EXISTS = ""  # the field that makes an exchange's hash exist before its first binding


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _publishing(keys: QueueKeys, chunk: list[tuple[int, int, int, bytes, str]]) -> scripts.Call:
    """The script call publishing `chunk` (message index, delay ms, priority, body, meta)."""
    top = max(level for _, _, level, _, _ in chunk)
    if top == 0 and not any(delay_ms for _, delay_ms, _, _, _ in chunk):
        now: list[Any] = []
        for _, _, _, body, meta in chunk:
            now += (body, meta)
        return scripts.PUBLISH_NOW, [keys.meta, keys.stream()], now
    args: list[Any] = []
    for _, delay_ms, level, body, meta in chunk:
        args += [delay_ms, level, uuid.uuid4().hex[:12] if delay_ms else "", body, meta]
    return scripts.PUBLISH, [keys.meta, keys.delayed, *keys.streams(top + 1)], args


class StreamsCore:
    """The shared part of the Redis Streams brokers: keys, scripts, routing, consumers."""

    def __init__(self, client: Any, settings: StreamsSettings, url: str) -> None:
        errors = require("redis.exceptions", extra="redis", feature="RedisStreamsBroker")
        self.client = client
        self.settings = settings
        self.url = url
        self.prefix = settings.prefix
        self.cluster = is_cluster(client)
        if settings.min_replicas and self.cluster:
            raise ConfigurationError(
                "min_replicas",
                settings.min_replicas,
                "0 with a RedisCluster client (WAIT answers for one node's writes; use "
                "the replicas of a Sentinel-managed or single server)",
            )
        self.connection_errors: tuple[type[BaseException], ...] = (
            errors.ConnectionError,
            errors.TimeoutError,
        )
        self._redis_error: type[BaseException] = errors.RedisError
        self.settlements = Settlements(self.prefix)
        self.getter = consumer_name("get")
        self._delays: dict[str, tuple[str, int]] = {}
        self._levels: dict[str, int] = {}
        self.options = ConsumerOptions(
            visibility_timeout=settings.visibility_timeout,
            block=settings.block,
            reclaim_every=settings.reclaim_every,
            connection_errors=self.connection_errors,
        )

    def keys(self, queue: str) -> QueueKeys:
        return QueueKeys.of(self.prefix, queue)

    def guard(self, flow: Flow[R], what: str, unconfirmed: Sequence[str] = ()) -> Flow[R]:
        """`flow` with redis-py's errors as ours: `ConnectionLost` for a lost or
        unreachable server (after the socket timeout), `BackendUnavailable` otherwise."""
        try:
            return (yield from flow)
        except self.connection_errors as exc:
            raise ConnectionLost(
                f"{what} on {self.url}: {exc}", unconfirmed, backend="redis"
            ) from exc
        except self._redis_error as exc:
            raise BackendUnavailable("redis", f"{what} on {self.url}: {exc}") from exc

    # -- topology ---------------------------------------------------------------------

    def declare_queue(self, spec: QueueSpec) -> Flow[None]:
        keys, dead = self.keys(spec.name), self.keys(spec.dead_letter)
        levels = (spec.max_priority or 0) + 1
        arguments = {k: json.dumps(v) for k, v in spec.arguments().items()}
        dead_arguments = {"x-queue-type": json.dumps(spec.queue_type)}
        args: list[Any] = [GROUP]
        for pairs in (arguments, dead_arguments):
            args.append(len(pairs))
            for name, value in pairs.items():
                args += [name, value]
        reply = yield from scripts.run(
            self.client,
            scripts.DECLARE,
            [keys.meta, dead.meta, dead.stream(), *keys.streams(levels)],
            args,
        )
        if reply:
            which, argument, current, declared = (_text(v) for v in reply)
            name = spec.name if which == "1" else spec.dead_letter
            raise TopologyConflict(
                name,
                argument,
                f"inequivalent arg {argument!r} for queue {name!r}: received "
                f"{declared or 'none'} but current is {current or 'none'}",
            )
        self._levels[spec.name] = levels

    def ensure_queue(self, name: str) -> Flow[None]:
        if not (yield self.client.exists, (self.keys(name).meta,)):
            yield from self.declare_queue(QueueSpec(name))

    def declare_delay(self, queue: str, delay: float) -> str:
        """The delay "queue" is the work queue's delay set: no I/O, only a name to
        publish to (remembered by this broker)."""
        delay_ms = delay_tier_ms(delay)
        name = delay_queue(queue, delay_ms)
        self._delays[name] = (queue, delay_ms)
        return name

    def declare_exchange(self, name: str) -> Flow[None]:
        yield self.client.hsetnx, (exchange_key(self.prefix, name), _EXISTS, "")

    def bind(self, exchange: str, queue: str, pattern: str) -> Flow[None]:
        keys = self.keys(queue)
        if not (yield self.client.exists, (keys.meta,)):
            raise BackendUnavailable("redis", f"no queue {queue!r} to bind")
        yield self.client.sadd, (keys.bound, exchange)
        field = json.dumps([pattern, queue])
        yield self.client.hset, (exchange_key(self.prefix, exchange), field, "1")

    def levels(self, queue: str) -> Flow[int]:
        """How many priority streams `queue` has (1 without priorities)."""
        levels = self._levels.get(queue)
        if levels is None:
            top = yield self.client.hget, (self.keys(queue).meta, "x-max-priority")
            levels = 1 + (int(top) if top else 0)
            self._levels[queue] = levels
        return levels

    def delete_queue(self, name: str) -> Flow[None]:
        keys = self.keys(name)
        top = yield self.client.hget, (keys.meta, "x-max-priority")
        exchanges = yield self.client.smembers, (keys.bound,)
        for exchange in sorted(_text(e) for e in exchanges):
            key = exchange_key(self.prefix, exchange)
            fields = yield self.client.hkeys, (key,)
            mine = [f for f in fields if f and json.loads(f)[1] == name]
            if mine:
                yield self.client.hdel, (key, *mine)
        levels = 1 + (int(top) if top else 0)
        yield self.client.delete, (keys.meta, keys.delayed, keys.bound, *keys.streams(levels))
        self._levels.pop(name, None)

    def delete_exchange(self, name: str) -> Flow[None]:
        yield self.client.delete, (exchange_key(self.prefix, name),)

    # -- publishing -------------------------------------------------------------------

    def publish(self, messages: Sequence[Outgoing]) -> Flow[None]:
        failed: dict[str, str] = {}
        bindings: dict[str, list[tuple[str, str]] | None] = {}
        for exchange in {m.exchange for m in messages if m.exchange}:
            raw = yield self.client.hgetall, (exchange_key(self.prefix, exchange),)
            bindings[exchange] = [tuple(json.loads(f)) for f in raw if f] if raw else None
        # queue -> (message index, delay ms, priority, body, meta) of what goes there
        plan: dict[str, list[tuple[int, int, int, bytes, str]]] = defaultdict(list)
        limit = self.settings.max_message_size
        for index, message in enumerate(messages):
            message_id = message.properties.message_id or ""
            targets = self._targets(message, bindings)
            if targets is None:
                failed[message_id] = f"NOT_FOUND: no exchange {message.exchange!r}"
                continue
            meta = entry_meta(message.properties, message.routing_key if message.exchange else None)
            size = len(message.body) + len(meta)
            if size > limit:
                failed[message_id] = (
                    f"{size} bytes, larger than max_message_size={limit}: store large "
                    "payloads elsewhere and publish a reference"
                )
                continue
            level = min(MAX_LEVEL, max(0, message.properties.priority or 0))
            for queue, delay_ms in targets:
                plan[queue].append((index, delay_ms, level, message.body, meta))
        calls: list[scripts.Call] = []
        owners: list[tuple[str, list[int]]] = []
        for queue, items in plan.items():
            keys = self.keys(queue)
            for start in range(0, len(items), _BATCH):
                chunk = items[start : start + _BATCH]
                calls.append(_publishing(keys, chunk))
                owners.append((queue, [index for index, *_ in chunk]))
        wait = (self.settings.min_replicas, int(self.settings.replica_timeout * 1000))
        results, replicas = (
            (yield from scripts.run_all(self.client, calls, wait if wait[0] else None))
            if calls
            else ([], None)
        )
        stored = [0] * len(messages)
        errors: dict[int, str] = {}
        for (queue, indexes), result in zip(owners, results, strict=True):
            for index in indexes:
                if isinstance(result, Exception):
                    errors[index] = f"{queue!r}: {result}"
                elif result >= 0:
                    stored[index] += 1
        nacked: list[str] = []
        for index, message in enumerate(messages):
            message_id = message.properties.message_id or ""
            if message_id in failed:
                continue
            if stored[index]:
                if replicas is not None and replicas < self.settings.min_replicas:
                    failed[message_id] = (
                        f"stored, but only {replicas} of min_replicas="
                        f"{self.settings.min_replicas} replicas acknowledged it within "
                        f"{self.settings.replica_timeout}s"
                    )
                    nacked.append(message_id)
            elif index in errors:
                failed[message_id] = errors[index]
            elif message.mandatory:
                failed[message_id] = f"NO_ROUTE: no queue {message.routing_key!r}"
        if failed:
            first = messages[0]
            raise PublishError(first.exchange or first.routing_key, failed, nacked)

    def _targets(
        self, message: Outgoing, bindings: dict[str, list[tuple[str, str]] | None]
    ) -> list[tuple[str, int]] | None:
        """(queue, delay ms) pairs `message` goes to; None for a missing exchange."""
        if not message.exchange:
            delayed = self._delays.get(message.routing_key)
            return [delayed] if delayed is not None else [(message.routing_key, 0)]
        bound = bindings.get(message.exchange)
        if bound is None:
            return None
        queues = {q for pattern, q in bound if topic_matches(pattern, message.routing_key)}
        return [(queue, 0) for queue in sorted(queues)]

    # -- consuming --------------------------------------------------------------------

    def get(
        self, queue: str, settle: Callable[[StreamsDelivery, str], None]
    ) -> Flow[Delivery | None]:
        levels = yield from self.levels(queue)
        keys = self.keys(queue)
        reply = yield from scripts.run(
            self.client,
            scripts.FETCH,
            [keys.meta, keys.delayed, *keys.streams(levels)],
            [GROUP, self.getter, 1, int(self.settings.visibility_timeout * 1000), 0],
        )
        if reply[2] == -2:
            return None
        return read_fetched(reply, settle, keys, self.getter)

    def depth(self, queue: str) -> Flow[int]:
        levels = yield from self.levels(queue)
        keys = self.keys(queue)
        count = yield from scripts.run(
            self.client, scripts.DEPTH, [keys.meta, keys.delayed, *keys.streams(levels)], [GROUP]
        )
        return int(count)

    def consumer(
        self,
        queue: str,
        prefetch: int,
        on_delivery: Callable[[Delivery], None],
        waker: Waker,
        on_settled: Callable[[], None],
    ) -> Flow[Consumer]:
        keys = self.keys(queue)
        if not (yield self.client.exists, (keys.meta,)):
            raise BackendUnavailable("redis", f"NOT_FOUND - no queue {queue!r}")
        levels = yield from self.levels(queue)
        return Consumer(
            keys, levels, prefetch, on_delivery, self.settlements, waker, self.options, on_settled
        )

    def send_settlements(self) -> Flow[None]:
        """Send what is waiting; on a lost connection keep it for the next try."""
        calls = self.settlements.take()
        if not calls:
            return
        try:
            yield from send(self.client, calls)
        except BaseException:
            self.settlements.retry(calls)
            raise
