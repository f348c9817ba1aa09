"""Sending a message and following the answer over SSE (or waiting for it as JSON), and resuming.

`POST /v1/conversations/{id}/messages` with `Accept: text/event-stream` streams the answer until
it ends; `GET /v1/conversations/{id}/events` (Last-Event-ID or ?after=) replays what the client
missed from the stream log and follows live. Both read the same log, on any pod.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from streaming_gateway.api.following import follow, start_turn
from streaming_gateway.api.middlewares import PENDING_COUNT, counted_by_turn, principal
from streaming_gateway.api.request_models import MessageIn, check_length, check_metadata, read_body
from streaming_gateway.api.sse import (
    comment_bytes,
    event_bytes,
    opening_bytes,
    resumable_end_bytes,
    sse_response,
)
from streaming_gateway.errors import InvalidInput
from streaming_gateway.keys import catalog_key, engine_key, settings_key, streams_key
from streaming_gateway.state.client_streams import StreamHandle
from streaming_gateway.state.log_follower import Follower
from streaming_gateway.state.stream_log import resumable_ahead

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


def wants_sse(request: web.Request) -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


@routes.post("/v1/conversations/{conversation_id}/messages")
@counted_by_turn
async def post_message(request: web.Request) -> web.StreamResponse:
    settings, engine = request.app[settings_key], request.app[engine_key]
    caller = principal(request)
    user_id = caller.user_id
    conversation = await engine.store.owned(request.match_info["conversation_id"], user_id)
    body = await read_body(request, MessageIn, max_bytes=settings.max_body_bytes)
    await request.app[catalog_key].check_turn(caller, conversation.agent_config_version)
    check_length(body.content, settings.max_message_chars, "content")
    check_metadata(body.metadata, settings)
    message: dict[str, Any] = {"role": "user", "content": body.content}
    if body.metadata:
        message["metadata"] = body.metadata
    sse = wants_sse(request)
    streams = request.app[streams_key]
    transport = "sse" if sse else "json"
    async with (
        streams.open(transport, user_id, slot_by_turn=True) as handle,
        follow(request.app, handle, conversation.id, turn_from=conversation.last_event_id) as follower,
    ):
        after = await start_turn(
            request.app, follower, conversation, [message], handle=handle, count=request.get(PENDING_COUNT)
        )
        if sse:
            return await _stream(
                request,
                follower,
                handle,
                after,
                until_end=True,
                headers={"X-Conversation-Id": conversation.id},
            )
        return await _collect(follower, conversation.id, after)


@routes.get("/v1/conversations/{conversation_id}/events")
async def get_events(request: web.Request) -> web.StreamResponse:
    settings, engine = request.app[settings_key], request.app[engine_key]
    user_id = principal(request).user_id
    conversation = await engine.store.owned(request.match_info["conversation_id"], user_id)
    ahead = resumable_ahead(conversation.ids_ahead, settings.token_batch_max)
    after = _after(request, conversation.last_event_id, ahead=ahead)
    until = request.query.get("until")
    if until not in (None, "end"):
        raise InvalidInput(
            "until must be 'end' (stop after the answer in progress ends) or absent", field="until"
        )
    streams = request.app[streams_key]
    async with (
        streams.open("sse", user_id) as handle,
        follow(request.app, handle, conversation.id) as follower,
    ):
        return await _stream(
            request,
            follower,
            handle,
            after,
            until_end=until == "end",
            headers={"X-Conversation-Id": conversation.id},
        )


def _after(request: web.Request, last_event_id: int, *, ahead: int = 0) -> int:
    """The id the client resumes after. Up to `ahead` ids past the log's last id while a producer
    owns the ids (`resumable_ahead`): it may have shown the client events its end persists under
    those ids; never further, so a made-up cursor gets a 400, not a wait for ids that never come."""
    field, raw = "Last-Event-ID", request.headers.get("Last-Event-ID")
    if raw is None:
        field, raw = "after", request.query.get("after", "0")
    try:
        after = int(raw.strip())
    except ValueError:
        raise InvalidInput(f"{field} must be an event id (an integer)", field=field) from None
    if after < 0 or after > last_event_id + ahead:
        raise InvalidInput(
            f"{field} {after} is not an event id of this conversation (last is {last_event_id})", field=field
        )
    return after


async def _stream(
    request: web.Request,
    follower: Follower,
    handle: StreamHandle,
    after: int,
    *,
    until_end: bool,
    headers: dict[str, str],
) -> web.StreamResponse:
    response = sse_response(headers)
    await response.prepare(request)
    try:
        await response.write(opening_bytes())
        ended = False
        # The entries already in hand go out in one write (one syscall, not one per token); the
        # last ones with the end of the response.
        out: list[bytes] = []
        async for entry in follower.entries(after, until_end=until_end):
            if entry is None:
                await response.write(comment_bytes("keep-alive"))
                continue
            out.append(event_bytes(entry))
            ended = entry.ends_answer
            # With until_end the entries end after the answer's end: it goes with the end below.
            if not follower.ready and not (until_end and ended):
                await response.write(b"".join(out))
                out.clear()
        if handle.stop.is_set() and not (until_end and ended):
            out.append(resumable_end_bytes(follower.last_id))
        await response.write_eof(b"".join(out))
    except ConnectionResetError:
        log.info("client left %s at event %d", follower.conversation_id, follower.last_id)
    except RedisError as exc:
        # The log is unreachable: end resumably; the client comes back with its Last-Event-ID.
        log.warning(
            "stream of %s ended at event %d: Redis failed: %s",
            follower.conversation_id,
            follower.last_id,
            exc,
        )
        with contextlib.suppress(ConnectionResetError):
            await response.write(
                comment_bytes(f"state store unavailable; resume with Last-Event-ID: {follower.last_id}")
            )
            await response.write_eof()
    return response


async def _collect(follower: Follower, conversation_id: str, after: int) -> web.Response:
    """Non-streaming: wait for the end of this assistant step and answer it as one JSON object."""
    text: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    actions: list[dict[str, Any]] = []
    error: dict[str, Any] | None = None
    end: dict[str, Any] = {}
    async for entry in follower.entries(after, until_end=False):
        if entry is None:
            continue
        event = json.loads(entry.data)
        if entry.type == "token":
            text.append(event["text"])
        elif entry.type == "tool_call":
            tool_calls.append({k: event.get(k) for k in ("tool_call_id", "name", "arguments", "action_id")})
        elif entry.type == "action_status":
            actions.append({k: event.get(k) for k in ("action_id", "name", "status", "error")})
        elif entry.type == "error":
            error = {k: event.get(k) for k in ("code", "message", "retryable")}
        elif entry.type == "message_end":
            end = event
            break
    body: dict[str, Any] = {
        "conversation_id": conversation_id,
        "message_id": end.get("message_id"),
        "content": "".join(text),
        "finish_reason": end.get("finish_reason", "interrupted"),
        "tool_calls": tool_calls,
        "actions": actions,
        "usage": end.get("usage"),
        "agent_config_version": end.get("agent_config_version"),
        "last_event_id": follower.last_id,
    }
    if error is not None:
        body["error"] = error
    return web.json_response(body, headers={"X-Conversation-Id": conversation_id})
