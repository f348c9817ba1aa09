"""Small helpers for the gateway tests: reading SSE answers."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.gateway.sse_client import SseEvent, SseParser


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
