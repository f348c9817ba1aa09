"""`POST /v1/chat/completions`: the OpenAI chat completions API, streamed or not, over the same log.

The official `openai` SDK works against it unchanged (base_url=<gateway>/v1, the JWT as api key).
The conversation is named by `X-Conversation-Id` (created when absent, returned on the response),
so plain OpenAI clients get server-side history: the messages after the request's last
assistant message are the new ones; the rest is already stored. Tools the caller passes are
passed to the model and their calls returned in OpenAI's shape for the caller to run; the
agent's backend actions belong to the conversation API (SSE/WebSocket). The model is the one the
conversation's agent config names; the request's `model` is echoed back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from streaming_gateway.api.middlewares import principal
from streaming_gateway.api.request_models import ChatCompletionIn, check_length, read_body
from streaming_gateway.api.sse import comment_bytes
from streaming_gateway.chat.overrides import Overrides
from streaming_gateway.errors import InvalidInput
from streaming_gateway.keys import configs_key, engine_key, settings_key, streams_key
from streaming_gateway.state.conversation_store import Conversation, new_id
from streaming_gateway.state.log_follower import Follower
from streaming_gateway.state.stream_log import LogEntry

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    settings, engine = request.app[settings_key], request.app[engine_key]
    user_id = principal(request).user_id
    body = await read_body(request, ChatCompletionIn, max_bytes=settings.max_body_bytes)
    new_messages, system_prompt = _new_messages(body, settings.max_message_chars)
    cid = request.headers.get("X-Conversation-Id")
    if cid:
        conversation = await engine.store.owned(cid, user_id)
    else:
        cid = new_id("conv")
        config = await request.app[configs_key].for_new_conversation(cid)
        conversation = await engine.store.create(user_id, config.version, cid=cid)
    overrides = Overrides(
        system_prompt=system_prompt,
        client_tools=body.tools or [],
        temperature=body.temperature,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        traceparent=request.headers.get("traceparent"),
    )
    streams = request.app[streams_key]
    async with streams.open("openai", user_id) as handle:
        follower = Follower(
            engine.log,
            engine.answers,
            conversation.id,
            heartbeat_s=settings.heartbeat_s,
            stop=handle.stop,
        )
        async with follower:
            after = await engine.start_turn(conversation, new_messages, overrides)
            completion = _Completion(conversation, body.model)
            if body.stream:
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                return await _stream(request, follower, after, completion, include_usage)
            async for entry in follower.entries(after, until_end=False, until_step_end=True):
                if entry is not None:
                    completion.add(entry)
            return web.json_response(
                completion.as_json(),
                status=502 if completion.error else 200,
                headers={"X-Conversation-Id": conversation.id},
            )


def _new_messages(body: ChatCompletionIn, max_chars: int) -> tuple[list[dict[str, Any]], str | None]:
    system = next((m.text() for m in body.messages if m.role in {"system", "developer"}), None)
    last_assistant = max((i for i, m in enumerate(body.messages) if m.role == "assistant"), default=-1)
    fresh: list[dict[str, Any]] = []
    for index in range(last_assistant + 1, len(body.messages)):
        message = body.messages[index]
        if message.role in {"system", "developer"}:
            continue
        check_length(message.text(), max_chars, f"messages.{index}.content")
        if message.role == "tool":
            if not message.tool_call_id:
                raise InvalidInput(
                    "a tool message needs tool_call_id", field=f"messages.{index}.tool_call_id"
                )
            fresh.append({"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text()})
        else:
            fresh.append({"role": "user", "content": message.text()})
    if not fresh:
        raise InvalidInput(
            "the request has no new user or tool message after the last assistant message", field="messages"
        )
    return fresh, system


class _Completion:
    """Turns log entries into OpenAI's chat.completion (and chunk) objects."""

    def __init__(self, conversation: Conversation, model: str) -> None:
        self.id = f"chatcmpl-{conversation.id}-{int(time.time() * 1000)}"
        self.created = int(time.time())
        self.model = model
        self.text: list[str] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.finish_reason = "stop"
        self.usage: dict[str, int] | None = None
        self.error: dict[str, Any] | None = None

    def add(self, entry: LogEntry) -> dict[str, Any] | None:
        """Record the entry; returns the chunk delta to stream for it, if any."""
        event = json.loads(entry.data)
        if entry.type == "token":
            self.text.append(event["text"])
            return {"content": event["text"]}
        if entry.type == "tool_call":
            arguments = event["arguments"]
            raw = arguments["_raw"] if set(arguments) == {"_raw"} else json.dumps(arguments)
            call = {
                "id": event["tool_call_id"],
                "type": "function",
                "function": {"name": event["name"], "arguments": raw},
            }
            self.tool_calls.append(call)
            return {"tool_calls": [{"index": len(self.tool_calls) - 1, **call}]}
        if entry.type == "error":
            self.error = {
                "message": event["message"],
                "type": "server_error",
                "code": event["code"],
                "param": None,
            }
        elif entry.type == "message_end":
            self.finish_reason = event["finish_reason"]
            self.usage = event.get("usage")
        return None

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        payload = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        return f"data: {json.dumps(payload)}\n\n".encode()

    def usage_chunk(self) -> bytes:
        payload = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": self.usage,
        }
        return f"data: {json.dumps(payload)}\n\n".encode()

    def as_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.text) or None,
            "refusal": None,
        }
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason}
            ],
            "usage": self.usage,
        }


async def _stream(
    request: web.Request, follower: Follower, after: int, completion: _Completion, include_usage: bool
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "X-Conversation-Id": follower.conversation_id,
        }
    )
    await response.prepare(request)
    try:
        await response.write(comment_bytes("connected"))
        await response.write(completion.chunk({"role": "assistant", "content": ""}))
        # The entries already in hand go out in one write (one syscall, not one per token).
        out: list[bytes] = []
        async for entry in follower.entries(after, until_end=False, until_step_end=True):
            if entry is None:
                await response.write(comment_bytes("keep-alive"))
                continue
            delta = completion.add(entry)
            if delta is not None:
                out.append(completion.chunk(delta))
            elif entry.type == "error":
                out.append(f"data: {json.dumps({'error': completion.error})}\n\n".encode())
            elif entry.type == "message_end":
                out.append(completion.chunk({}, completion.finish_reason))
                if include_usage and completion.usage:
                    out.append(completion.usage_chunk())
                out.append(b"data: [DONE]\n\n")
            if out and (not follower.ready or entry.type == "message_end"):
                await response.write(b"".join(out))
                out.clear()
        if out:
            await response.write(b"".join(out))
        await response.write_eof()
    except ConnectionResetError:
        log.info("OpenAI-API client left %s at event %d", follower.conversation_id, follower.last_id)
    except RedisError as exc:
        log.warning("OpenAI-API stream of %s failed: Redis: %s", follower.conversation_id, exc)
        error = {
            "message": "conversation state became unavailable",
            "type": "server_error",
            "code": "state_unavailable",
            "param": None,
        }
        with contextlib.suppress(ConnectionResetError):
            await response.write(f"data: {json.dumps({'error': error})}\n\n".encode())
            await response.write_eof()
    return response
