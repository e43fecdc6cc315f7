"""Queue on Redis Streams: confirmed publishing and consume-and-ack against bare redis-py,
and the same work (enqueue and process 10,000 messages) against Dramatiq's Redis broker.

Every figure is measured side by side in one run, in alternating rounds, with 100-byte
JSON bodies; ratios are medians of per-round ratios (min..max beside them). Client and
server share this machine's cores (see the docs' benchmark page for where Redis ran).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks.harness import Bench
from benchmarks.queue import _rates, _summary

REDIS_URL = os.environ.get("SCALEPATTERNS_REDIS_URL", "redis://127.0.0.1:6379/0")
BODY = "x" * 98  # JSON-encoded: a 100-byte string body
PAYLOAD = json.dumps(BODY).encode()


def _meta() -> str:
    """What a hand-written producer puts beside the body: an id, the content type, the
    creation time, an attempt counter (what our entries carry)."""
    now = time.time()
    return json.dumps(
        {
            "i": uuid.uuid4().hex,
            "c": "application/json",
            "ts": int(now),
            "h": {"x-sp-attempt": 1, "x-sp-created": int(now * 1000)},
        },
        separators=(",", ":"),
    )


def _wait_for(done: threading.Event, what: str) -> None:
    if not done.wait(120):
        raise TimeoutError(f"{what} did not finish in 120 s")


def run(bench: Bench) -> None:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        client.ping()
    except Exception as exc:
        bench.skip(f"Redis not reachable at {REDIS_URL}: {exc}")

    from scalepatterns.queue import RedisStreamsBroker

    prefix = f"sp_bench_{uuid.uuid4().hex[:8]}:"
    broker = RedisStreamsBroker(REDIS_URL, prefix=prefix)
    try:
        _publishing(bench, client, broker, prefix)
        _consuming(bench, client, broker, prefix)
        _against_dramatiq(bench, client, broker, prefix)
    finally:
        broker.close()
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()


def _publishing(bench: Bench, client: Any, broker: Any, prefix: str) -> None:
    from scalepatterns.queue import Producer, QueueSpec
    from scalepatterns.queue.streams.keys import QueueKeys

    batch, reps, rounds = bench.scale(1000, 200), bench.scale(10, 2), bench.scale(7, 2)
    queue = "publish"
    broker.declare_queue(QueueSpec(queue))
    stream = QueueKeys.of(prefix, queue).stream()
    bare_key = f"{prefix}bare.publish"
    producer = Producer(broker)
    bodies = [BODY] * batch

    def timed(publish: Callable[[], None], key: str) -> float:
        start = time.perf_counter()
        for _ in range(reps):
            publish()
        rate = reps * batch / (time.perf_counter() - start)
        client.xtrim(key, maxlen=0)  # untimed: keeps Redis's memory flat across rounds
        return rate

    def ours() -> float:
        return timed(lambda: producer.publish_many(queue, bodies), stream)

    def bare_same() -> None:
        pipe = client.pipeline(transaction=False)
        for _ in range(batch):
            pipe.xadd(bare_key, {"b": json.dumps(BODY), "m": _meta()})
        pipe.execute()

    def bare_body() -> None:
        pipe = client.pipeline(transaction=False)
        for _ in range(batch):
            pipe.xadd(bare_key, {"b": PAYLOAD})
        pipe.execute()

    rates = _rates(
        {
            "scalepatterns publish_many (confirmed)": ours,
            "bare pipelined XADD, same entries": lambda: timed(bare_same, bare_key),
            "bare pipelined XADD, body only (ceiling)": lambda: timed(bare_body, bare_key),
        },
        rounds,
    )
    bench.record(
        f"Redis Streams: confirmed publish ({reps} x publish_many of {batch} 100-byte bodies)",
        _summary(rates, "bare pipelined XADD, same entries"),
        target=">= 0.8x a bare pipelined redis-py XADD of the same messages",
        note="'same entries': the bare loop JSON-encodes each body and an id, content type, "
        "timestamp and attempt beside it (what our entries carry) and XADDs both fields in "
        "one pipeline, as a hand-written producer would; 'body only' XADDs a prepared body. "
        "Ours encodes each message (Producer), routes it and adds it with one Lua script "
        "call per 500 messages (confirmed: the call answered).",
    )


def _consuming(bench: Bench, client: Any, broker: Any, prefix: str) -> None:
    from scalepatterns.queue import Producer, QueueSpec, Worker

    count, rounds, prefetch = bench.scale(10_000, 500), bench.scale(5, 2), 100
    queue = "consume"
    broker.declare_queue(QueueSpec(queue))
    producer = Producer(broker)
    bare_key = f"{prefix}bare.consume"
    client.xgroup_create(bare_key, "bare", id="0", mkstream=True)

    def ours_broker() -> float:
        producer.publish_many(queue, [BODY] * count)
        done, seen = threading.Event(), [0]

        def on_delivery(delivery: Any) -> None:
            json.loads(delivery.body)
            delivery.ack()
            seen[0] += 1
            if seen[0] == count:
                done.set()

        start = time.perf_counter()
        subscription = broker.consume(queue, prefetch=prefetch, on_delivery=on_delivery)
        _wait_for(done, "consuming")
        rate = count / (time.perf_counter() - start)
        subscription.close()
        return rate

    def ours_worker() -> float:
        producer.publish_many(queue, [BODY] * count)
        done, seen, lock = threading.Event(), [0], threading.Lock()

        def handler(_message: object) -> None:
            with lock:
                seen[0] += 1
                if seen[0] == count:
                    done.set()

        worker = Worker(broker, queue, handler, concurrency=2, prefetch=prefetch)
        start = time.perf_counter()
        worker.start()
        _wait_for(done, "the worker")
        rate = count / (time.perf_counter() - start)
        worker.stop()
        return rate

    def bare(*, same_work: bool) -> float:
        pipe = client.pipeline(transaction=False)
        for _ in range(count):
            pipe.xadd(bare_key, {"b": PAYLOAD, "m": _meta()})
        pipe.execute()
        seen = 0
        start = time.perf_counter()
        while seen < count:
            reply = client.xreadgroup("bare", "c", {bare_key: ">"}, count=prefetch, block=100)
            ids = []
            for _stream, entries in reply:
                for entry_id, fields in entries:
                    json.loads(fields[b"b"])
                    if same_work:
                        json.loads(fields[b"m"])
                    ids.append(entry_id)
            if same_work:
                pipe = client.pipeline(transaction=False)
                pipe.xack(bare_key, "bare", *ids)
                pipe.xdel(bare_key, *ids)
                pipe.execute()
            else:
                client.xack(bare_key, "bare", *ids)
            seen += len(ids)
        rate = count / (time.perf_counter() - start)
        client.xtrim(bare_key, maxlen=0)
        return rate

    rates = _rates(
        {
            "scalepatterns broker.consume (decode, ack)": ours_broker,
            "scalepatterns Worker (decode, handler, ack)": ours_worker,
            "bare XREADGROUP + XACK loop (decode)": lambda: bare(same_work=False),
            "bare loop, same work (decode properties, XACK + XDEL)": lambda: bare(same_work=True),
        },
        rounds,
    )
    bench.record(
        f"Redis Streams: consume-and-ack throughput ({count} messages, prefetch {prefetch})",
        _summary(
            rates,
            "bare XREADGROUP + XACK loop (decode)",
            ours_against="bare loop, same work (decode properties, XACK + XDEL)",
        ),
        target=">= 0.8x a bare XREADGROUP + XACK loop",
        note="The bare loop reads 100 at a time, JSON-decodes each body and acks the batch "
        "with one XACK (it leaves acked entries in the stream). broker.consume decodes "
        "each entry's properties too (about 2.3 us of Python per message: JSON and a "
        "Properties), settles each delivery on its own (XACK and XDEL in a script, "
        "carried with the next fetch); 'same work' is the bare loop decoding the "
        "properties and deleting acked entries too. The Worker also decodes the message, "
        "runs the handler on a pool of 2 threads and settles through its retry logic.",
    )


def _against_dramatiq(bench: Bench, client: Any, broker: Any, prefix: str) -> None:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    from scalepatterns.queue import Producer, QueueSpec, Worker

    count, rounds, prefetch = bench.scale(10_000, 300), bench.scale(3, 1), 100
    done, seen, lock = threading.Event(), [0], threading.Lock()
    expected = [count]

    def count_it(_body: object = None) -> None:
        with lock:
            seen[0] += 1
            if seen[0] == expected[0]:
                done.set()

    def reset(total: int) -> None:
        done.clear()
        seen[0], expected[0] = 0, total

    queue = "work"
    broker.declare_queue(QueueSpec(queue))
    producer = Producer(broker)
    results: dict[str, list[float]] = {}

    def keep(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    def ours_process(total: int, worker_prefetch: int | None) -> float:
        worker = Worker(
            broker, queue, lambda _m: count_it(), concurrency=2, prefetch=worker_prefetch
        )
        start = time.perf_counter()
        worker.start()
        _wait_for(done, "the scalepatterns worker")
        rate = total / (time.perf_counter() - start)
        worker.stop()
        return rate

    def theirs_process(total: int, worker_prefetch: int | None) -> float:
        # A broker of its own each time: a dramatiq Worker adds middleware to its broker.
        dramatiq_broker = RedisBroker(url=REDIS_URL, namespace=f"{prefix}dramatiq")
        actor = dramatiq.actor(count_it, broker=dramatiq_broker, queue_name="work")
        start = time.perf_counter()
        for _ in range(total):
            actor.send(BODY)
        sent = total / (time.perf_counter() - start)
        worker = dramatiq.Worker(dramatiq_broker, worker_threads=2, worker_timeout=100)
        if worker_prefetch is not None:
            worker.queue_prefetch = worker_prefetch
        start = time.perf_counter()
        worker.start()
        _wait_for(done, "the dramatiq worker")
        rate = total / (time.perf_counter() - start)
        worker.stop()
        dramatiq_broker.close()
        keep("dramatiq actor.send, one by one (msg/s)", sent)
        return rate

    def ours() -> None:
        reset(count)
        start = time.perf_counter()
        for _ in range(count):
            producer.publish(queue, BODY)
        keep("scalepatterns publish, one by one (msg/s)", count / (time.perf_counter() - start))
        client.xtrim(f"{prefix}{{{queue}}}:s", maxlen=0)
        start = time.perf_counter()
        producer.publish_many(queue, [BODY] * count)
        keep("scalepatterns publish_many (msg/s)", count / (time.perf_counter() - start))
        keep(f"scalepatterns Worker, prefetch {prefetch} (msg/s)", ours_process(count, prefetch))

    def theirs() -> None:
        reset(count)
        keep(f"dramatiq Worker, prefetch {prefetch} (msg/s)", theirs_process(count, prefetch))

    ours()  # warm-up of both
    theirs()
    results.clear()
    for index in range(rounds):
        for side in (ours, theirs) if index % 2 == 0 else (theirs, ours):
            side()
    # With the default prefetch (2 x threads) Dramatiq's consumer sleeps whenever its
    # prefetch is full: a smaller run shows it.
    small = bench.scale(1000, 100)
    reset(small)
    producer.publish_many(queue, [BODY] * small)
    keep("scalepatterns Worker, default prefetch (msg/s)", ours_process(small, None))
    reset(small)
    keep("dramatiq Worker, default prefetch (msg/s)", theirs_process(small, None))
    results["dramatiq actor.send, one by one (msg/s)"].pop()

    values: dict[str, object] = {
        name: round(sorted(samples)[len(samples) // 2]) for name, samples in results.items()
    }
    for ours_name, theirs_name, label in (
        (
            "scalepatterns publish, one by one (msg/s)",
            "dramatiq actor.send, one by one (msg/s)",
            "enqueue one by one, ours / dramatiq",
        ),
        (
            "scalepatterns publish_many (msg/s)",
            "dramatiq actor.send, one by one (msg/s)",
            "enqueue a batch, ours / dramatiq one by one",
        ),
        (
            f"scalepatterns Worker, prefetch {prefetch} (msg/s)",
            f"dramatiq Worker, prefetch {prefetch} (msg/s)",
            f"process, prefetch {prefetch}, ours / dramatiq",
        ),
    ):
        ratios = [a / b for a, b in zip(results[ours_name], results[theirs_name], strict=True)]
        values[label] = (
            f"{sorted(ratios)[len(ratios) // 2]:.2f}x ({min(ratios):.2f}..{max(ratios):.2f})"
        )
    bench.record(
        f"Redis Streams vs Dramatiq's Redis broker: enqueue and process {count} messages",
        values,
        note="Same Redis, same 100-byte body, 2 worker threads each, prefetch 100 both "
        "(Dramatiq: queue_prefetch, worker_timeout 100 ms), default middleware (Dramatiq's "
        "retries; ours: retries through the delay set, dead letters). Dramatiq has no batch "
        "enqueue (one script call per send) and acknowledges each message with its own "
        f"call. The default-prefetch rows ({small} messages, once): 2 x threads each; "
        "Dramatiq's consumer then sleeps (backing off up to its worker_timeout) whenever "
        "its prefetch is full.",
    )
