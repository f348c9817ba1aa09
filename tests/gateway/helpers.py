"""Small helpers for the gateway tests: waiting on a condition with a deadline, reading SSE."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from tests.gateway.sse_client import SseEvent, SseParser

DEADLINE_S = 15.0


async def eventually(
    condition: Callable[[], Awaitable[bool]], what: str, timeout: float = DEADLINE_S
) -> None:
    """Poll until condition() is true; fail naming `what` at the deadline (not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.02)


async def read_events(
    response: aiohttp.ClientResponse,
    *,
    stop_after: int | None = None,
    until_end: bool = True,
    parser: SseParser | None = None,
) -> list[SseEvent]:
    """Events from an SSE response until the answer ends (or stop_after events, or the stream ends)."""
    parser = parser or SseParser()
    events: list[SseEvent] = []
    async for chunk in response.content.iter_any():
        for event in parser.feed(chunk):
            events.append(event)
            if stop_after is not None and len(events) >= stop_after:
                return events
            if (
                until_end
                and event.type == "message_end"
                and json.loads(event.data)["finish_reason"] != "tool_calls"
            ):
                return events
    return events


def data(event: SseEvent) -> dict[str, Any]:
    return json.loads(event.data)


def text_of(events: list[SseEvent]) -> str:
    return "".join(data(e)["text"] for e in events if e.type == "token")
