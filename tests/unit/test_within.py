"""`within`: a time limit that never loses the caller's cancellation."""

from __future__ import annotations

import asyncio

import pytest

from scalepatterns._within import within


async def _cancelled_as_it_completes() -> object:
    """The awaited future completes and the caller is cancelled in the same iteration:
    what `asyncio.wait_for` (before 3.12) answers with the result."""
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(within(future, 10))
    await asyncio.sleep(0)  # the task now awaits the future
    future.set_result(1)
    task.cancel()
    return await task


def test_a_cancellation_as_the_awaited_future_completes_is_not_lost() -> None:
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(_cancelled_as_it_completes())


def test_the_result_within_the_limit() -> None:
    async def main() -> int:
        await asyncio.sleep(0)
        return 7

    assert asyncio.run(within(main(), 5)) == 7
    assert asyncio.run(within(main(), None)) == 7


def test_running_out_of_time_cancels_the_awaitable_and_raises_timeout() -> None:
    cancelled: list[bool] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(within(slow(), 0.01))
    assert cancelled == [True]
