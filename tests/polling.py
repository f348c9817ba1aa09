"""Waiting for what the system does asynchronously: poll with a deadline, never sleep a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: How long a condition may take before the test fails: a deadline, not a timing assertion.
DEADLINE_S = 30.0
POLL_S = 0.02


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    what: str = "the condition",
    *,
    timeout: float = DEADLINE_S,
    tick: Callable[[], Awaitable[Any]] | None = None,
) -> T:
    """Poll `check` until it returns something truthy, and return that; before each check run `tick`
    when given (e.g. one step of a local worker). Fails naming `what` once `timeout` has passed.
    A check that answers None until ready gives the value's own type (T, not T | None)."""
    deadline = time.monotonic() + timeout
    while True:
        if tick is not None:
            await tick()
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s")
        await asyncio.sleep(POLL_S)
