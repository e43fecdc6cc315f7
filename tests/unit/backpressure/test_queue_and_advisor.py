"""QueueBackpressure's hysteresis and modes (fake clock), depth sources, and the advisor."""

from __future__ import annotations

import asyncio
import math

import fakeredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalepatterns import (
    BackendUnavailable,
    ConfigurationError,
    EventRecorder,
    FakeClock,
    Listeners,
    QueueBackpressure,
    QueueFull,
    advise_workers,
)
from scalepatterns.backpressure import (
    QueueReleased,
    QueueThrottled,
    RabbitMQQueueDepth,
    RedisListDepth,
    RedisStreamDepth,
    WorkShed,
)


class DrainingQueue:
    """A queue drained at `rate` messages per second of the fake clock."""

    def __init__(self, clock: FakeClock, rate: float) -> None:
        self.clock = clock
        self.rate = rate
        self.depth = 0.0
        self.at = clock.monotonic()
        self.readings: list[int] = []

    def __call__(self) -> int:
        now = self.clock.monotonic()
        self.depth = max(0.0, self.depth - (now - self.at) * self.rate)
        self.at = now
        self.readings.append(int(self.depth))
        return int(self.depth)

    def publish(self) -> None:
        self()
        self.depth += 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_block_mode_keeps_a_fast_producer_between_the_watermarks(mode: str) -> None:
    clock = FakeClock()
    queue = DrainingQueue(clock, rate=100.0)
    listeners = Listeners()
    recorder = EventRecorder()
    listeners.add(recorder)
    gate = QueueBackpressure(
        queue, high=50, low=10, wait_interval=0.05, clock=clock, listeners=listeners, queue="jobs"
    )
    admit = gate.admit if mode == "sync" else (lambda: asyncio.run(gate.aadmit()))
    peak = 0
    for _ in range(2000):  # the producer never sleeps on its own: 100% faster than drain
        assert admit()
        queue.publish()
        peak = max(peak, int(queue.depth))
        clock.advance(0.001)
    assert peak <= 50  # admitted only below high, published one at a time
    after_first_fill = queue.readings[queue.readings.index(49) :]
    assert min(after_first_fill) >= 5  # it released near low (10), not at empty
    throttles = recorder.of_type(QueueThrottled)
    releases = recorder.of_type(QueueReleased)
    assert len(throttles) >= 3
    assert abs(len(throttles) - len(releases)) <= 1
    assert all(e.depth <= 10 for e in releases)
    assert all(e.depth >= 50 for e in throttles)
    assert gate.blocked_seconds > 0


def test_reject_mode_raises_queue_full_until_below_low() -> None:
    depth = [0]
    gate = QueueBackpressure(lambda: depth[0], high=10, low=3, mode="reject", queue="emails")
    assert gate.admit()
    depth[0] = 12
    with pytest.raises(QueueFull) as info:
        gate.admit()
    assert (info.value.queue, info.value.depth) == ("emails", 12)
    depth[0] = 5
    with pytest.raises(QueueFull):
        gate.admit()
    depth[0] = 3
    assert gate.admit()
    assert gate.rejected == 2


def test_shed_mode_drops_low_priority_only() -> None:
    depth = [100]
    listeners = Listeners()
    recorder = EventRecorder()
    listeners.add(recorder, WorkShed)
    gate = QueueBackpressure(
        lambda: depth[0], high=50, mode="shed", shed_priority=1, listeners=listeners
    )
    assert gate.admit(priority=0) is True
    assert gate.admit(priority=1) is False
    assert gate.admit(priority=2) is False
    assert gate.shed == 2
    assert [e.priority for e in recorder.events] == [1, 2]
    depth[0] = 25
    assert gate.admit(priority=2) is True


def test_block_mode_timeout_raises_queue_full() -> None:
    clock = FakeClock()
    gate = QueueBackpressure(lambda: 99, high=10, timeout=1.0, clock=clock)
    with pytest.raises(QueueFull):
        gate.admit()
    assert clock.monotonic() == pytest.approx(1.0)


def test_check_every_reuses_a_reading() -> None:
    clock = FakeClock()
    reads = []

    def source() -> int:
        reads.append(clock.monotonic())
        return 0

    gate = QueueBackpressure(source, high=10, check_every=1.0, clock=clock)
    for _ in range(100):
        gate.admit()
        clock.advance(0.05)
    assert len(reads) == 5


@given(st.lists(st.integers(0, 200), max_size=200), st.integers(1, 150), st.data())
def test_hysteresis_state_machine(depths, high, data) -> None:
    low = data.draw(st.integers(0, high - 1))
    gate = QueueBackpressure(lambda: 0, high=high, low=low, mode="reject")
    throttled = False
    for depth in depths:
        if depth >= high:
            throttled = True
        elif depth <= low:
            throttled = False
        assert gate.observe(depth) is throttled


def test_redis_list_and_stream_depth() -> None:
    client = fakeredis.FakeRedis()
    client.rpush("jobs", "a", "b", "c")
    client.xadd("events", {"x": "1"})
    assert RedisListDepth(client, "jobs")() == 3
    assert RedisStreamDepth(client, "events")() == 1


def test_depth_source_failures_are_backend_unavailable() -> None:
    import redis

    dead = redis.Redis(port=1, socket_connect_timeout=0.2)
    with pytest.raises(BackendUnavailable):
        RedisListDepth(dead, "jobs")()
    with pytest.raises(BackendUnavailable) as info:
        RabbitMQQueueDepth("amqp://guest:guest@127.0.0.1:1/%2F", "jobs")()
    assert "guest:guest" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"high": 0}, "high"),
        ({"high": 10, "low": 10}, "low"),
        ({"high": 10, "low": -1}, "low"),
        ({"high": 10, "mode": "drop"}, "mode"),
        ({"high": 10, "timeout": -1}, "timeout"),
        ({"high": 10, "wait_interval": 0}, "wait_interval"),
        ({"high": 10, "mode": "shed", "shed_priority": "low"}, "shed_priority"),
    ],
)
def test_bad_configuration(kwargs: dict, parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        QueueBackpressure(lambda: 0, **kwargs)
    assert info.value.parameter == parameter
    with pytest.raises(TypeError):
        QueueBackpressure(42, high=1)  # type: ignore[arg-type]


def test_advisor_matches_textbook_erlang_c() -> None:
    # lambda = 2/s, service 1 s (a = 2 erlangs), 3 workers: P(wait) = 4/9, Wq = 4/9 s.
    advice = advise_workers(arrival_rate=2.0, service_time=1.0, target_wait=0.5)
    assert advice.workers == 3
    assert advice.wait_probability == pytest.approx(4 / 9)
    assert advice.expected_wait == pytest.approx(4 / 9)
    assert advice.utilization == pytest.approx(2 / 3)
    assert advise_workers(2.0, 1.0, 0.4).workers == 4
    assert advise_workers(0.0, 1.0, 0.1).workers == 1


@given(
    st.floats(min_value=0.1, max_value=2000),
    st.floats(min_value=0.001, max_value=2.0),
    st.floats(min_value=0.001, max_value=10.0),
)
def test_advisor_is_the_fewest_workers_meeting_the_target(rate, service, target) -> None:
    advice = advise_workers(rate, service, target, max_workers=100_000)
    assert advice.workers > rate * service  # Little's law: a stable queue needs more than a
    assert advice.expected_wait <= target
    fewer = advice.workers - 1
    if fewer > rate * service:
        from scalepatterns.backpressure.advisor import _erlang_c

        wait = _erlang_c(fewer, rate * service) * service / (fewer - rate * service)
        assert wait > target
    assert math.isclose(advice.utilization, rate * service / advice.workers)


@pytest.mark.parametrize(
    ("args", "parameter"),
    [((-1, 1, 1), "arrival_rate"), ((1, 0, 1), "service_time"), ((1, 1, 0), "target_wait")],
)
def test_advisor_bad_input(args, parameter) -> None:
    with pytest.raises(ConfigurationError) as info:
        advise_workers(*args)
    assert info.value.parameter == parameter
