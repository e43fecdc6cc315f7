"""A producer throttled by queue depth: it pauses above 50 waiting jobs until the slower
worker drains them below 10 (an in-memory queue and a fake clock; swap the depth source for
``RedisListDepth(client, key)`` or ``RabbitMQQueueDepth(url, queue)`` in production)."""

from __future__ import annotations

from collections import deque

from scalepatterns import EventRecorder, FakeClock, Listeners, QueueBackpressure
from scalepatterns.backpressure import QueueReleased, QueueThrottled


def main() -> dict[str, int]:
    clock = FakeClock()
    queue: deque[int] = deque()
    consumed: list[int] = []
    last_drain = [0.0]

    def depth() -> int:
        # The worker handles 200 jobs/s; drain what it would have handled by now.
        now = clock.monotonic()
        handled = min(len(queue), int((now - last_drain[0]) * 200))
        consumed.extend(queue.popleft() for _ in range(handled))
        last_drain[0] = now
        return len(queue)

    listeners = Listeners()
    recorder = EventRecorder()
    listeners.add(recorder)
    gate = QueueBackpressure(
        depth, high=50, low=10, mode="block", queue="jobs", clock=clock, listeners=listeners
    )
    peak = 0
    for job in range(1000):  # the producer could go at 1000 jobs/s
        gate.admit()
        queue.append(job)
        peak = max(peak, len(queue))
        clock.advance(0.001)
    while queue:
        clock.advance(0.01)
        depth()
    return {
        "published": 1000,
        "consumed": len(consumed),
        "peak depth": peak,
        "pauses": len(recorder.of_type(QueueThrottled)),
        "resumes": len(recorder.of_type(QueueReleased)),
    }


if __name__ == "__main__":
    for name, value in main().items():
        print(f"{name}: {value}")
