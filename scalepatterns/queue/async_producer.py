"""`AsyncProducer`: `Producer` for asyncio services, on an `AsyncBroker`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scalepatterns.clock import SYSTEM_CLOCK, Clock
from scalepatterns.events import Listeners
from scalepatterns.queue.broker import AsyncBroker, Outgoing
from scalepatterns.queue.errors import ConnectionLost, PublishError
from scalepatterns.queue.producer import Publishing
from scalepatterns.serializers import Serializer

__all__ = ["AsyncProducer"]

# Bodies encoded per loop iteration in `publish_many` (~10 us each): other tasks wait
# well under a millisecond while a big batch is prepared.
_SLICE = 32


class AsyncProducer:
    """`Producer` with awaitable `publish` and `publish_many`: the same arguments, ids,
    errors and confirm semantics, without blocking the event loop.

    A cancelled `publish` raises `CancelledError` and never reports a message as sent;
    the broker's connection stays usable.

    ```python
    import asyncio
    from scalepatterns.queue import AsyncMemoryBroker, AsyncProducer

    async def main() -> None:
        broker = AsyncMemoryBroker()  # or AsyncRabbitMQBroker(url)
        producer = AsyncProducer(broker)
        await producer.publish("emails", {"to": "ada@example.com"})
        ids = await producer.publish_many("emails", [{"n": n} for n in range(3)])
        assert await broker.depth("emails") == 4 and len(ids) == 3
        await broker.close()

    asyncio.run(main())
    ```
    """

    def __init__(
        self,
        broker: AsyncBroker,
        *,
        serializer: Serializer | None = None,
        confirm_timeout: float = 30.0,
        reconnect_timeout: float = 30.0,
        declare: bool = True,
        clock: Clock = SYSTEM_CLOCK,
        listeners: Listeners | None = None,
    ) -> None:
        self.broker = broker
        self.publishing = Publishing(
            serializer, confirm_timeout, reconnect_timeout, declare, clock, listeners
        )

    async def publish(
        self,
        queue: str,
        body: Any,
        *,
        type: str | None = None,
        delay: float | None = None,
        priority: int | None = None,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Publish one message to `queue`; return its id once the broker confirmed it."""
        target = await self.target(queue, delay)
        out = self.publishing.encode(
            target, body, message_id=message_id, type=type, headers=headers, priority=priority
        )
        await self.send(queue, [out])
        return out.properties.message_id or ""

    async def publish_many(
        self,
        queue: str,
        bodies: Iterable[Any],
        *,
        type: str | None = None,
        delay: float | None = None,
        priority: int | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Publish many messages with pipelined confirms; return their ids once every one
        was confirmed (`PublishError` names any the broker refused)."""
        target = await self.target(queue, delay)
        encode = self.publishing.encode
        batch: list[Outgoing] = []
        for body in bodies:
            batch.append(encode(target, body, type=type, headers=headers, priority=priority))
            if len(batch) % _SLICE == 0:
                await asyncio.sleep(0)
        if batch:
            await self.send(queue, batch)
        return [out.properties.message_id or "" for out in batch]

    async def target(self, queue: str, delay: float | None = None) -> str:
        """Where to publish for `queue`: the queue (declared on first use unless
        `declare` is off), or its delay queue for `delay` seconds."""
        if self.publishing.must_declare(queue):
            await self.broker.ensure_queue(queue)
            self.publishing.declared(queue)
        if delay is not None and delay > 0:
            return await self.broker.declare_delay(queue, delay)
        return queue

    async def send(self, target: str, messages: Sequence[Outgoing]) -> None:
        """Publish prepared messages, publishing unconfirmed ones again after a reconnect."""
        resend = self.publishing.resend(messages)
        while True:
            try:
                await self.broker.publish(resend.pending, timeout=self.publishing.confirm_timeout)
                break
            except (ConnectionLost, PublishError) as error:
                await self.publishing.clock.asleep(resend.after(error, target))
        self.publishing.published(target, len(messages))

    def __repr__(self) -> str:
        return f"AsyncProducer({self.broker!r})"
