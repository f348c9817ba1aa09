"""Background tasks stop for good on close (state/task_stop.py)."""

from __future__ import annotations

import asyncio

from streaming_gateway.state.task_stop import stop


async def test_a_task_that_swallows_a_cancel_is_cancelled_again() -> None:
    """A task that loses the first cancel (as `asyncio.wait_for` on 3.11 can) still ends: the cancel
    is sent again, and `stop` returns once the task is done instead of waiting forever."""
    cancels = 0

    async def stubborn() -> None:
        nonlocal cancels
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancels += 1
                if cancels > 1:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)  # the task starts waiting
    await stop(task)
    assert task.cancelled() and cancels == 2


async def test_a_cancel_of_the_caller_reaches_the_caller() -> None:
    """Cancelling whoever waits in `stop` cancels that caller, not only the task it stops."""
    release = asyncio.Event()

    async def slow_to_end() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # cleanup that takes its time
            raise

    task = asyncio.create_task(slow_to_end())
    await asyncio.sleep(0)
    closer = asyncio.create_task(stop(task))
    await asyncio.sleep(0)
    closer.cancel()
    await asyncio.wait({closer})
    assert closer.cancelled()
    release.set()
    await asyncio.wait({task})
    assert task.cancelled()
