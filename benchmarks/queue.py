"""Queue: confirmed publishing, consume-and-ack and end-to-end latency on RabbitMQ.

Every figure is measured side by side in one run with the same message size (100-byte
bodies, persistent) and count, in alternating rounds; the ratios are medians of
per-round ratios (min..max beside them). The sync API is measured against bare pika
(BlockingConnection), the async API against aio-pika, on one event loop, with the event
loop's lag seen by a 1 ms ticker while 10,000 messages are published and consumed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks.harness import Bench

# A process doing nothing but a 1 ms ticker until SIGTERM; prints its p99 lag in ms.
_IDLE_TICKER = """
import asyncio, signal
async def main():
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    lags = []
    while not stop.is_set():
        due = loop.time() + 0.001
        await asyncio.sleep(0.001)
        lags.append(loop.time() - due)
    lags.sort()
    print(lags[int(len(lags) * 0.99)] * 1000 if lags else 0.0)
asyncio.run(main())
"""

AMQP_URL = os.environ.get("SCALEPATTERNS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
BODY = "x" * 98  # JSON-encoded: a 100-byte string body


def _connect() -> object:
    import pika

    params = pika.URLParameters(AMQP_URL)
    params.connection_attempts = 1
    params.socket_timeout = 3
    return pika.BlockingConnection(params)


def _rates(candidates: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Alternate the candidates `rounds` times; each returns messages per second."""
    names = list(candidates)
    for name in names:  # warm-up
        candidates[name]()
    rates: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            rates[name].append(candidates[name]())
    return rates


def _summary(
    rates: dict[str, list[float]], baseline: str, *, ours_against: str = ""
) -> dict[str, object]:
    """Each candidate's median rate and its per-round ratio to `baseline`; with
    `ours_against`, also the first candidate's ratio to that one."""
    values: dict[str, object] = {}
    for name, samples in rates.items():
        values[f"{name} (msg/s, median)"] = round(statistics.median(samples))
    pairs = [(name, baseline) for name in rates if name != baseline]
    if ours_against:
        pairs.append((next(iter(rates)), ours_against))
    for name, other in pairs:
        ratios = [a / b for a, b in zip(rates[name], rates[other], strict=True)]
        values[f"{name} / {other}"] = (
            f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}..{max(ratios):.2f})"
        )
    return values


def run(bench: Bench) -> None:
    try:
        import pika

        _connect().close()  # type: ignore[attr-defined]
    except Exception as exc:
        bench.skip(f"RabbitMQ not reachable at {AMQP_URL}: {exc}")

    from scalepatterns.queue import Producer, RabbitMQBroker, Worker

    count = bench.scale(10_000, 500)
    rounds = bench.scale(7, 2)
    prefix = f"sp_bench_{uuid.uuid4().hex[:8]}"
    conn = _connect()
    channel = conn.channel()  # type: ignore[attr-defined]
    broker = RabbitMQBroker(AMQP_URL)
    persistent = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    payload = b'"' + BODY.encode() + b'"'
    queues: list[str] = []
    try:
        # -- confirmed publishing ------------------------------------------------------
        pub_queue = f"{prefix}.publish"
        queues += [pub_queue, f"{pub_queue}.dead"]
        # a bounded queue keeps the broker's memory flat across rounds (drops the head)
        channel.queue_declare(pub_queue, durable=True, arguments={"x-max-length": 2000})
        bare_conn = _connect()
        bare_plain = bare_conn.channel()  # type: ignore[attr-defined]
        confirm_conn = _connect()
        bare_confirm = confirm_conn.channel()  # type: ignore[attr-defined]
        bare_confirm.confirm_delivery()
        producer = Producer(broker)
        bodies = [BODY] * count
        batch = bench.scale(1000, 200)
        batch_bodies = [BODY] * batch

        def ours() -> None:
            producer.publish_many(pub_queue, batch_bodies)

        def confirm_each() -> None:
            for _ in range(batch):
                bare_confirm.basic_publish("", pub_queue, payload, persistent)

        def unconfirmed() -> None:
            for _ in range(batch):
                bare_plain.basic_publish("", pub_queue, payload, persistent)

        comparison = bench.compare(
            f"confirmed publish, per message (batches of {batch} x 100-byte persistent)",
            {
                "scalepatterns publish_many (confirmed)": ours,
                "bare pika, confirm per message": confirm_each,
                "bare pika, no confirms (ceiling)": unconfirmed,
            },
            baseline="bare pika, confirm per message",
            number=3,
            ops=batch,
            rounds=7,
            target="throughput >= 5x confirm-per-message (time ratio <= 0.2x) and >= 0.5x "
            "the unconfirmed ceiling",
        )
        by_name = {c.name: c for c in comparison.candidates}
        ours_c = by_name["scalepatterns publish_many (confirmed)"]
        ceiling_c = by_name["bare pika, no confirms (ceiling)"]
        per_round = [c / o for o, c in zip(ours_c.samples_ns, ceiling_c.samples_ns, strict=True)]
        bench.record(
            "confirmed publish throughput (from the comparison above)",
            {
                **{f"{c.name} (msg/s)": round(1e9 / c.per_op_ns) for c in comparison.candidates},
                "ours vs confirm per message (throughput x)": round(1 / ours_c.ratio_median, 2),
                "ours vs ceiling (throughput x, median)": round(statistics.median(per_round), 2),
                "ours vs ceiling (min..max)": f"{min(per_round):.2f}..{max(per_round):.2f}",
            },
            target=">= 5x the confirm-per-message figure and >= 0.5x the unconfirmed ceiling",
        )
        bare_conn.close()  # type: ignore[attr-defined]
        confirm_conn.close()  # type: ignore[attr-defined]

        # -- consume and ack -----------------------------------------------------------
        con_queue = f"{prefix}.consume"
        queues += [con_queue, f"{con_queue}.dead"]
        worker_probe = Worker(broker, con_queue, print)
        broker.declare_queue(worker_probe.spec)
        prefetch = 100

        def fill() -> None:
            producer.publish_many(con_queue, bodies)

        def ours_consume() -> float:
            fill()
            done = threading.Event()
            seen = [0]
            lock = threading.Lock()

            def handler(_message: object) -> None:
                with lock:
                    seen[0] += 1
                    if seen[0] == count:
                        done.set()

            worker = Worker(broker, con_queue, handler, concurrency=2, prefetch=prefetch)
            start = time.perf_counter()
            worker.start()
            done.wait(120)
            elapsed = time.perf_counter() - start
            worker.stop()
            return count / elapsed

        def bare_consume() -> float:
            fill()
            connection = _connect()
            ch = connection.channel()  # type: ignore[attr-defined]
            ch.basic_qos(prefetch_count=prefetch)
            seen = [0]

            def on_message(c: object, method: object, _props: object, _body: bytes) -> None:
                c.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]
                seen[0] += 1
                if seen[0] == count:
                    c.stop_consuming()  # type: ignore[attr-defined]

            start = time.perf_counter()
            ch.basic_consume(con_queue, on_message)
            ch.start_consuming()
            elapsed = time.perf_counter() - start
            connection.close()  # type: ignore[attr-defined]
            return count / elapsed

        rates = _rates(
            {
                "scalepatterns Worker (decode, handler, ack)": ours_consume,
                "bare pika consumer": bare_consume,
            },
            rounds,
        )
        bench.record(
            f"consume-and-ack throughput ({count} messages, prefetch {prefetch})",
            _summary(rates, "bare pika consumer"),
            target=">= 0.8x a bare pika consumer with the same prefetch",
            note="Worker with concurrency 2: the handler runs on a pool thread, acks are "
            "batched back to the I/O thread; the bare consumer acks in its callback.",
        )

        _async_figures(bench, prefix, queues)

        # -- end-to-end latency --------------------------------------------------------
        lat_queue = f"{prefix}.latency"
        queues += [lat_queue, f"{lat_queue}.dead"]
        samples: list[float] = []
        lock = threading.Lock()

        def record(message: object) -> None:
            now = time.perf_counter()
            with lock:
                samples.append(now - message.body["t"])  # type: ignore[attr-defined]

        n = bench.scale(500, 50)
        with Worker(broker, lat_queue, record, concurrency=2, prefetch=10):
            for _ in range(n):
                producer.publish(lat_queue, {"t": time.perf_counter()})
                time.sleep(0.004)
            deadline = time.monotonic() + 30
            while len(samples) < n and time.monotonic() < deadline:
                time.sleep(0.01)
        ordered = sorted(samples)
        bench.record(
            "end-to-end latency, publish -> handler start (low load)",
            {
                "messages": len(ordered),
                "p50 (ms)": round(ordered[len(ordered) // 2] * 1000, 2),
                "p99 (ms)": round(
                    ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2
                ),
                "max (ms)": round(ordered[-1] * 1000, 2),
            },
            note="One message every ~4 ms, timed from just before publish() to the start of "
            "the handler in the same process (publish waits for the broker confirm).",
        )
    finally:
        for queue in queues:
            try:
                channel.queue_delete(queue)
            except Exception:
                channel = conn.channel()  # type: ignore[attr-defined]
        broker.close()
        conn.close()  # type: ignore[attr-defined]


def _aio_pika_url() -> str:
    return AMQP_URL.replace("/%2F", "/")  # aio-pika (yarl) names the default vhost "/"


async def _async_rates(
    candidates: dict[str, Callable[[], Any]], rounds: int
) -> dict[str, list[float]]:
    """`_rates` for coroutine functions, on one event loop."""
    names = list(candidates)
    for name in names:  # warm-up
        await candidates[name]()
    rates: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            rates[name].append(await candidates[name]())
    return rates


def _async_figures(bench: Bench, prefix: str, queues: list[str]) -> None:
    """The async API against aio-pika, and the loop's lag under load."""
    import aio_pika

    from scalepatterns.queue import AsyncProducer, AsyncRabbitMQBroker, AsyncWorker, QueueSpec

    batch = bench.scale(1000, 200)
    count = bench.scale(10_000, 500)
    rounds = bench.scale(7, 2)
    prefetch = 100
    payload = b'"' + BODY.encode() + b'"'
    pub_queue, con_queue, lag_queue = (f"{prefix}.async_{n}" for n in ("pub", "con", "lag"))
    queues += [pub_queue, con_queue, lag_queue, *(f"{q}.dead" for q in (con_queue, lag_queue))]

    async def main() -> None:
        broker = AsyncRabbitMQBroker(AMQP_URL)
        producer = AsyncProducer(broker)
        connection = await aio_pika.connect(_aio_pika_url())
        confirming = await connection.channel(publisher_confirms=True)
        plain = await connection.channel(publisher_confirms=False)
        await confirming.declare_queue(pub_queue, durable=True, arguments={"x-max-length": 2000})
        persistent = aio_pika.DeliveryMode.PERSISTENT
        bodies = [BODY] * batch

        async def ours() -> float:
            start = time.perf_counter()
            await producer.publish_many(pub_queue, bodies)
            return batch / (time.perf_counter() - start)

        def aio_pika_publisher(channel: Any) -> Callable[[], Any]:
            async def publish() -> float:
                start = time.perf_counter()
                for _ in range(batch):
                    message = aio_pika.Message(
                        payload, delivery_mode=persistent, content_type="application/json"
                    )
                    await channel.default_exchange.publish(message, routing_key=pub_queue)
                return batch / (time.perf_counter() - start)

            return publish

        rates = await _async_rates(
            {
                "scalepatterns AsyncProducer.publish_many (confirmed)": ours,
                "aio-pika, await each confirm": aio_pika_publisher(confirming),
                "aio-pika, no confirms": aio_pika_publisher(plain),
            },
            rounds,
        )
        bench.record(
            f"async confirmed publish ({batch} x 100-byte persistent per round)",
            _summary(rates, "aio-pika, await each confirm", ours_against="aio-pika, no confirms"),
            target=">= 5x aio-pika awaiting each confirm, >= 0.6x aio-pika without confirms",
            note="All three on one event loop; ours encodes each body as JSON and pipelines "
            "the confirms of the whole batch.",
        )

        # -- consume and ack -----------------------------------------------------------
        await broker.declare_queue(QueueSpec(con_queue))

        async def fill() -> None:
            await producer.publish_many(con_queue, [BODY] * count)

        async def ours_consume() -> float:
            await fill()
            done = asyncio.Event()
            seen = [0]

            async def handler(_message: object) -> None:
                seen[0] += 1
                if seen[0] == count:
                    done.set()

            worker = AsyncWorker(broker, con_queue, handler, concurrency=8, prefetch=prefetch)
            start = time.perf_counter()
            await worker.start()
            await asyncio.wait_for(done.wait(), 120)
            elapsed = time.perf_counter() - start
            await worker.stop()
            return count / elapsed

        async def aio_pika_consume() -> float:
            await fill()
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=prefetch)
            queue = await channel.get_queue(con_queue, ensure=False)
            done = asyncio.Event()
            seen = [0]

            async def on_message(message: Any) -> None:
                json.loads(message.body)  # as our worker decodes
                await message.ack()
                seen[0] += 1
                if seen[0] == count:
                    done.set()

            start = time.perf_counter()
            tag = await queue.consume(on_message)
            await asyncio.wait_for(done.wait(), 120)
            elapsed = time.perf_counter() - start
            await queue.cancel(tag)
            await channel.close()
            return count / elapsed

        rates = await _async_rates(
            {
                "scalepatterns AsyncWorker (decode, handler, ack)": ours_consume,
                "aio-pika consumer (decode, ack)": aio_pika_consume,
            },
            rounds,
        )
        bench.record(
            f"async consume-and-ack throughput ({count} messages, prefetch {prefetch})",
            _summary(rates, "aio-pika consumer (decode, ack)"),
            target=">= 1.0x an aio-pika consumer with the same prefetch",
        )

        # -- the loop's lag while 10,000 messages go through ---------------------------
        lags: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                due = loop.time() + 0.001
                await asyncio.sleep(0.001)
                lags.append(loop.time() - due)

        total = bench.scale(10_000, 1000)
        handled = asyncio.Event()
        seen = [0]

        async def count_it(_message: object) -> None:
            seen[0] += 1
            if seen[0] == total:
                handled.set()

        tick = asyncio.ensure_future(ticker())
        idle_ticker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _IDLE_TICKER, stdout=asyncio.subprocess.PIPE
        )
        async with AsyncWorker(broker, lag_queue, count_it, concurrency=8, prefetch=prefetch):
            start = time.perf_counter()
            await producer.publish_many(lag_queue, [BODY] * total)
            await asyncio.wait_for(handled.wait(), 120)
            elapsed = time.perf_counter() - start
        stop.set()
        await tick
        idle_ticker.send_signal(signal.SIGTERM)
        idle_p99 = float((await idle_ticker.communicate())[0])
        ordered = sorted(lags)
        bench.record(
            f"event-loop lag seen by a 1 ms ticker while {total} messages are published "
            "and consumed",
            {
                "ticks": len(ordered),
                "p50 (ms)": round(ordered[len(ordered) // 2] * 1000, 3),
                "p99 (ms)": round(ordered[int(len(ordered) * 0.99)] * 1000, 3),
                "max (ms)": round(ordered[-1] * 1000, 3),
                "publish + consume (s)": round(elapsed, 2),
                "p99 of an idle process's ticker meanwhile (ms)": round(idle_p99, 3),
            },
            target="p99 <= 2 ms",
            note="One loop runs the ticker, AsyncProducer.publish_many of all the messages "
            "at once and an AsyncWorker (concurrency 8, prefetch 100) consuming them. The "
            "idle process runs only a ticker, beside the load: its lag is the machine's "
            "(CPU shared with RabbitMQ), the floor of the figure above.",
        )
        await connection.close()
        await broker.close()

    asyncio.run(main())
