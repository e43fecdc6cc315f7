"""ConcurrencyLimiter: the same bulkhead scenarios with threads and with asyncio tasks."""

from __future__ import annotations

import asyncio
import threading

import pytest

from scalepatterns import (
    BulkheadFull,
    ConcurrencyLimiter,
    ConfigurationError,
    EventRecorder,
    Listeners,
)
from scalepatterns.backpressure import BulkheadRejected


def test_never_more_than_max_concurrent_threads() -> None:
    bulkhead = ConcurrencyLimiter(3, max_waiting=None)
    lock = threading.Lock()
    current = peak = done = 0
    barrier = threading.Barrier(12)

    @bulkhead
    def work() -> None:
        nonlocal current, peak, done
        with lock:
            current += 1
            peak = max(peak, current)
        for _ in range(2000):
            pass
        with lock:
            current -= 1
            done += 1

    def run() -> None:
        barrier.wait()
        for _ in range(50):
            work()

    threads = [threading.Thread(target=run) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert done == 600
    assert 1 <= peak <= 3
    assert bulkhead.in_use == 0
    assert bulkhead.waiting == 0


def test_never_more_than_max_concurrent_tasks() -> None:
    bulkhead = ConcurrencyLimiter(2, max_waiting=None)
    current = peak = done = 0

    @bulkhead
    async def work() -> None:
        nonlocal current, peak, done
        current += 1
        peak = max(peak, current)
        await asyncio.sleep(0)
        current -= 1
        done += 1

    async def main() -> None:
        await asyncio.gather(*(work() for _ in range(100)))

    asyncio.run(main())
    assert (done, peak) == (100, 2)
    assert bulkhead.in_use == 0


def test_full_with_no_waiting_room_refuses_at_once() -> None:
    listeners = Listeners()
    recorder = EventRecorder()
    listeners.add(recorder)
    bulkhead = ConcurrencyLimiter(1, name="db", listeners=listeners)
    with bulkhead:
        with pytest.raises(BulkheadFull) as info:
            bulkhead.acquire()
        with pytest.raises(BulkheadFull):
            asyncio.run(bulkhead.aacquire())
    assert info.value.reason == "full"
    assert info.value.name == "db"
    assert info.value.limit == 1
    assert "retry later" in str(info.value)
    assert bulkhead.rejected == 2
    assert [e.reason for e in recorder.of_type(BulkheadRejected)] == ["full", "full"]


def test_waiter_times_out_then_slot_is_usable() -> None:
    bulkhead = ConcurrencyLimiter(1, max_waiting=1, timeout=0.01)
    bulkhead.acquire()
    with pytest.raises(BulkheadFull) as info:
        bulkhead.acquire()
    assert info.value.reason == "timeout"
    assert bulkhead.waiting == 0
    bulkhead.release()
    bulkhead.acquire()
    bulkhead.release()
    assert bulkhead.in_use == 0


def test_async_waiter_times_out_and_is_cancelled_cleanly() -> None:
    bulkhead = ConcurrencyLimiter(1, max_waiting=2)

    async def main() -> None:
        await bulkhead.aacquire()
        with pytest.raises(BulkheadFull):
            await bulkhead.aacquire(timeout=0.01)
        task = asyncio.ensure_future(bulkhead.aacquire())
        await asyncio.sleep(0)
        assert bulkhead.waiting == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert bulkhead.waiting == 0
        bulkhead.release()

    asyncio.run(main())
    assert bulkhead.in_use == 0


def test_released_slot_goes_to_the_waiting_thread() -> None:
    bulkhead = ConcurrencyLimiter(1, max_waiting=1)
    bulkhead.acquire()
    got = threading.Event()

    def waiter() -> None:
        with bulkhead:
            got.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    while bulkhead.waiting == 0:
        threading.Event().wait(0.001)
    with pytest.raises(BulkheadFull):  # the waiting room (1) is full
        bulkhead.acquire(timeout=0)
    bulkhead.release()
    thread.join(5)
    assert got.is_set()
    assert bulkhead.in_use == 0


def test_release_without_acquire_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        ConcurrencyLimiter(1).release()


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"max_concurrent": 2.5}, "max_concurrent"),
        ({"max_concurrent": 1, "max_waiting": -1}, "max_waiting"),
        ({"max_concurrent": 1, "timeout": -1}, "timeout"),
    ],
)
def test_bad_configuration(kwargs: dict, parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ConcurrencyLimiter(**kwargs)
    assert info.value.parameter == parameter


def test_a_listener_may_call_back_into_the_bulkhead() -> None:
    """Events are emitted outside the lock: a listener touching the bulkhead cannot deadlock."""
    listeners = Listeners()
    bulkhead = ConcurrencyLimiter(1, listeners=listeners)
    seen = []

    def listener(event: object) -> None:
        if not seen:
            seen.append(event)
            with pytest.raises(BulkheadFull):
                bulkhead.acquire()

    listeners.add(listener)
    with bulkhead, pytest.raises(BulkheadFull):
        bulkhead.acquire()
    assert len(seen) == 1
    assert bulkhead.rejected == 2


def test_an_interrupted_waiting_thread_leaves_no_slot_behind(monkeypatch) -> None:
    from scalepatterns.backpressure import concurrency

    class Interrupted(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            raise KeyboardInterrupt  # Ctrl-C (or a gevent timeout) while queued

    def interrupted_waiter() -> concurrency._Waiter:
        event = Interrupted()
        return concurrency._Waiter(event.set, event=event)

    bulkhead = ConcurrencyLimiter(1, max_waiting=5)
    bulkhead.acquire()
    monkeypatch.setattr(concurrency, "_thread_waiter", interrupted_waiter)
    with pytest.raises(KeyboardInterrupt):
        bulkhead.acquire(timeout=5)
    monkeypatch.undo()
    assert bulkhead.waiting == 0
    bulkhead.release()
    assert bulkhead.in_use == 0  # the slot was not handed to the vanished waiter
    bulkhead.acquire(timeout=0.01)  # and a new caller gets it at once
