"""Chapter 7: the same patterns in an asyncio service, on one event loop."""

from __future__ import annotations

import asyncio
import logging

from scalepatterns import Cache, RateLimiter
from scalepatterns.queue import (
    AsyncDeadLetters,
    AsyncEventBus,
    AsyncMemoryBroker,
    AsyncProducer,
    AsyncWorker,
    MemoryDedupStore,
    Message,
    RetryPolicy,
    TaskRegistry,
    task,
    task_worker,
)

TITLE = "Asyncio: awaitable queue, cache and limiter on one event loop"


def run() -> None:
    logging.getLogger("scalepatterns.queue").setLevel(logging.ERROR)  # the tour prints instead
    asyncio.run(main())


async def main() -> None:
    broker = AsyncMemoryBroker()  # same semantics as AsyncRabbitMQBroker(url)
    await worker_on_the_loop(broker)
    await tasks_and_events(broker)
    await broker.close()
    await cache_and_limiter()


async def worker_on_the_loop(broker: AsyncMemoryBroker) -> None:
    """Handlers are tasks on this loop: they share its clients, never block it."""
    sent: list[str] = []
    all_sent, last_try = asyncio.Event(), asyncio.Event()
    running = peak = 0

    async def send_email(message: Message) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.01)  # an async SMTP call
            if message.body["n"] == 3 and message.attempt == 1:
                raise ConnectionError("SMTP server busy")
            if message.body.get("poison"):
                if message.attempt == policy.attempts:
                    last_try.set()
                raise ValueError("malformed address")
            sent.append(message.body["to"])
            if len(sent) == 8:
                all_sent.set()
        finally:
            running -= 1

    policy = RetryPolicy(attempts=2, wait=lambda attempt: 0.05)
    producer = AsyncProducer(broker)
    dead = AsyncDeadLetters(broker, "emails")
    worker = AsyncWorker(
        broker, "emails", send_email, concurrency=4, retry=policy, dedup=MemoryDedupStore()
    )
    async with worker:  # or `await worker.run()`: until SIGTERM, gracefully
        await producer.publish_many(
            "emails", [{"to": f"u{n}@example.com", "n": n} for n in range(8)]
        )
        await producer.publish("emails", {"to": "@@", "n": 9, "poison": True})
        await asyncio.wait_for(asyncio.gather(all_sent.wait(), last_try.wait()), 5)
    # leaving `async with` stops the worker: running handlers finish (the last try of the
    # poison message ends in the dead-letter queue), the rest would go back to the queue
    print(
        f"   AsyncWorker: {len(sent)} emails sent, at most {peak} handlers at once (concurrency 4)"
    )
    print(f"   one retried after a busy SMTP server; {await dead.count()} dead letter (poison)")


async def tasks_and_events(broker: AsyncMemoryBroker) -> None:
    registry = TaskRegistry()
    built: list[int] = []
    done = asyncio.Event()

    @task(broker, queue="reports", registry=registry)
    async def build_report(user_id: int) -> None:
        built.append(user_id)
        if got:
            done.set()

    message_id = await build_report.delay(42)  # confirmed once it returns
    bus = AsyncEventBus(broker)
    got: list[str] = []

    async def analytics(message: Message) -> None:
        got.append(message.type or "")
        if built:
            done.set()

    await bus.subscribe("user.*", analytics, group="analytics")
    async with task_worker(broker, "reports", registry=registry), bus:
        await bus.publish("user.signed_up", {"user": 1})
        await asyncio.wait_for(done.wait(), 5)
    print(f"   await build_report.delay(42) -> message {message_id[:8]}..., ran for {built}")
    print(f"   AsyncEventBus: analytics got {got}")


async def cache_and_limiter() -> None:
    cache = Cache.memory(ttl=60)
    loads: list[int] = []

    @cache.cached()
    async def profile(user_id: int) -> dict[str, int]:
        loads.append(user_id)
        await asyncio.sleep(0.01)  # an async query
        return {"id": user_id}

    await asyncio.gather(*(profile(7) for _ in range(10)))  # ten callers, one load
    limiter = RateLimiter("5/s", burst=5)  # in-process here; redis= a redis.asyncio client
    allowed = sum([(await limiter.aacquire("client:1")).allowed for _ in range(8)])
    print(f"   cache: 10 concurrent awaits of one key -> {len(loads)} load")
    print(f"   limiter: {allowed} of 8 aacquire() calls allowed (burst 5)")
