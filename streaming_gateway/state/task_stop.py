"""Stopping a background task for good, whatever it was awaiting."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

#: How long one cancel is given before it is sent again.
RECANCEL_S = 1.0


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait for its end. The cancel is sent again while the task runs on: on
    Python 3.11, `asyncio.wait_for` (which redis-py's reads and connects go through) can swallow a
    cancel that races the completion of what it waits for, and a single cancel then leaves the task
    running and its closer waiting forever. A cancel of the caller meanwhile still reaches the caller
    (suppressing CancelledError around `await task` would swallow it)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_S)
    if not task.cancelled() and task.exception() is not None:
        log.debug("%s ended with %r", task.get_name(), task.exception())
