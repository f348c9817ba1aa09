"""Small helpers for the gateway tests: reading SSE answers, a follower's stand-in for the running
answers, a new conversation in Redis."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from agent_contracts.redis_connection import AnyRedis
from streaming_gateway.state.conversation_store import ConversationStore
from streaming_gateway.state.stream_log import StreamLog
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

    def done(event: SseEvent, events: list[SseEvent]) -> bool:
        ended = (
            until_end
            and event.type == "message_end"
            and json.loads(event.data)["finish_reason"] != "tool_calls"
        )
        return ended or (stop_after is not None and len(events) >= stop_after)

    return await read_until(response, parser, done)


async def read_until(
    response: aiohttp.ClientResponse,
    parser: SseParser,
    done: Callable[[SseEvent, list[SseEvent]], bool],
) -> list[SseEvent]:
    """Events until `done(event, events so far)` says so, or the stream ends. Events of the last
    chunk past that point stay in `parser.unread` for the next read on the same stream."""
    events: list[SseEvent] = []
    queue, parser.unread = parser.unread, []
    while True:
        while queue:
            event = queue.pop(0)
            events.append(event)
            if done(event, events):
                parser.unread = queue
                return events
        chunk = await response.content.readany()
        if not chunk:
            return events
        queue = parser.feed(chunk)


def data(event: SseEvent) -> dict[str, Any]:
    return json.loads(event.data)


def text_of(events: list[SseEvent]) -> str:
    return "".join(data(e)["text"] for e in events if e.type == "token")


class NoAnswers:
    """A follower's `answers` when no answer runs on this pod: nothing to nudge."""

    def nudge(self, conversation_id: str) -> None:
        pass


async def new_conversation(redis: AnyRedis, user: str = "alice") -> str:
    """A conversation written to Redis as the gateway writes it; returns its id."""
    return (await ConversationStore(redis, ttl_s=600).create(user, "default@000000000000")).id


def recording_ops(log: StreamLog, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every run of the log's write script through `log` from now on, as (op, owner token)."""
    ops: list[tuple[str, str]] = []
    write = log.write

    async def recorded(conversation_id: str, triples: Any, **options: Any) -> Any:
        ops.append((options.get("op", ""), options.get("token", "")))
        return await write(conversation_id, triples, **options)

    monkeypatch.setattr(log, "write", recorded)
    return ops
