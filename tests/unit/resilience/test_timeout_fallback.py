"""timeout(...), the shared deadline, and fallback(...)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import pytest

from scalepatterns import ConfigurationError, DeadlineExceeded, EventRecorder, FakeClock, Listeners
from scalepatterns.resilience import (
    FallbackUsed,
    TimeoutExpired,
    deadline,
    fallback,
    remaining,
    timeout,
)
from scalepatterns.resilience.timeout import _DaemonPool

from .conftest import Side


def test_async_call_is_cancelled_at_the_deadline() -> None:
    listeners, recorder = Listeners(), EventRecorder()
    listeners.add(recorder)
    cancelled = []

    @timeout(0.02, listeners=listeners)
    async def hang() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with pytest.raises(DeadlineExceeded) as info:
        asyncio.run(hang())
    assert isinstance(info.value, TimeoutError)
    assert info.value.timeout == 0.02
    assert cancelled == [True]
    assert [e.timeout for e in recorder.of_type(TimeoutExpired)] == [0.02]


def test_sync_call_stops_waiting_and_the_worker_finishes_later() -> None:
    release = threading.Event()
    finished = threading.Event()

    @timeout(0.02)
    def stuck() -> str:
        release.wait(10)
        finished.set()
        return "late"

    with pytest.raises(DeadlineExceeded):
        stuck()
    assert not finished.is_set()  # the caller did not wait for it...
    release.set()
    assert finished.wait(10)  # ...and the call ran to its end on its worker thread


def test_fast_calls_return_their_result(side: Side) -> None:
    assert side.through(timeout(5.0), lambda: 42) == 42


def test_nested_calls_share_the_remaining_budget(side: Side) -> None:
    seen: list[float] = []

    def inner() -> str:
        left = remaining()
        assert left is not None
        seen.append(left)
        return "done"

    outer_budget = timeout(0.5)
    inner_budget = timeout(30.0)
    assert (
        side.through(
            outer_budget,
            lambda: (
                side.through(inner_budget, inner)
                if side.name == "sync"
                else inner_budget.call(inner)
            ),
        )
        == "done"
    )
    assert 0 < seen[0] <= 0.5


def test_deadline_context_caps_nested_deadlines() -> None:
    clock = FakeClock()
    with deadline(3.0, clock=clock) as outer:
        assert outer == 3.0
        clock.advance(1.0)
        with deadline(10.0, clock=clock) as inner:
            assert inner == 2.0
        assert remaining() == 2.0
    assert remaining() is None


def test_expired_deadline_refuses_before_calling() -> None:
    clock = FakeClock()
    calls = []
    with deadline(1.0, clock=clock):
        clock.advance(2.0)
        with pytest.raises(DeadlineExceeded):
            timeout(5.0, mode="inline", clock=clock).call(calls.append, 1)
    assert calls == []


def test_inline_mode_drops_a_late_result() -> None:
    clock = FakeClock()

    def slow() -> str:
        clock.advance(2.0)  # simulated latency
        return "late"

    with pytest.raises(DeadlineExceeded):
        timeout(1.0, mode="inline", clock=clock).call(slow)
    assert timeout(3.0, mode="inline", clock=clock).call(slow) == "late"


@pytest.mark.parametrize("value", [0, -1, "1", True])
def test_bad_timeout(value: object) -> None:
    with pytest.raises(ConfigurationError):
        timeout(value)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        timeout(1.0, mode="process")  # type: ignore[arg-type]


def test_fallback_value_and_function(side: Side) -> None:
    listeners, recorder = Listeners(), EventRecorder()
    listeners.add(recorder)

    def down() -> str:
        raise ConnectionError("down")

    assert (
        side.through(fallback("cached", on=ConnectionError, listeners=listeners), down) == "cached"
    )
    assert side.through(fallback(lambda exc: f"from {type(exc).__name__}"), down) == (
        "from ConnectionError"
    )
    assert [e.error for e in recorder.of_type(FallbackUsed)] == ["ConnectionError"]


def test_fallback_only_for_named_errors(side: Side) -> None:
    def broken() -> str:
        raise ValueError("bug")

    with pytest.raises(ValueError):
        side.through(fallback("cached", on=ConnectionError), broken)


def test_async_fallback_function_is_awaited() -> None:
    async def from_cache(exc: BaseException) -> str:
        return "cached"

    @fallback(from_cache)
    async def down() -> str:
        raise ConnectionError

    assert asyncio.run(down()) == "cached"


def test_a_call_that_never_returns_does_not_block_interpreter_exit() -> None:
    script = (
        "import threading\n"
        "from scalepatterns import DeadlineExceeded\n"
        "from scalepatterns.resilience import timeout\n"
        "try:\n"
        "    timeout(0.01).call(threading.Event().wait)\n"
        "except DeadlineExceeded:\n"
        "    print('gave up')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "gave up"


def test_worker_pool_is_bounded_and_reused() -> None:
    pool = _DaemonPool(max_workers=2)
    futures = [pool.submit(lambda i=i: i * 2) for i in range(20)]
    assert [f.result(timeout=10) for f in futures] == [i * 2 for i in range(20)]
    assert pool._threads <= 2
    failing = pool.submit(int, "x")
    with pytest.raises(ValueError):
        failing.result(timeout=10)


def test_daemon_pool_starts_a_worker_rather_than_queue_behind_a_hung_call() -> None:
    """Two calls submitted back to back must not both count on the one idle worker:
    the second would wait behind the first (a hung call) while the pool has room."""
    pool = _DaemonPool(max_workers=4)
    pool.submit(lambda: None).result(timeout=5)  # leaves one idle worker
    release = threading.Event()
    try:
        hung = pool.submit(release.wait)
        quick = pool.submit(lambda: 42)
        assert quick.result(timeout=10) == 42
        assert not hung.done()
    finally:
        release.set()
    assert hung.result(timeout=10) is True
    assert pool._threads == 2


def test_sync_call_with_an_async_fallback_function_says_so_and_leaks_no_coroutine() -> None:
    """The async fallback's coroutine is closed, not left to warn "never awaited"."""
    import gc
    import warnings

    async def cached(exc: BaseException) -> str:
        return "cached"

    @fallback(cached, on=ConnectionError)
    def quote() -> str:
        raise ConnectionError("down")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TypeError, match="async def"):
            quote()
        gc.collect()
    assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []
