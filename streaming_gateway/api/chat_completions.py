"""`POST /v1/chat/completions`: the OpenAI chat completions API, streamed or not, over the same log.

The official `openai` SDK and other OpenAI clients work against it unchanged (base_url=<gateway>/v1,
the JWT as api key); docs/openai-compatibility.md lists what is supported, passed through or
refused. The conversation is named by `X-Conversation-Id` (created when absent, returned on the
response), so plain OpenAI clients get server-side history: the messages after the request's last
assistant message are the new ones; the rest is already stored. A request without it starts a
conversation with the whole history it sends, as stateless clients expect, kept only
GATEWAY_STATELESS_TTL_SECONDS once answered (state/retention.py). Tools the caller
passes are passed to the model and their calls returned in OpenAI's shape for the caller to run;
the agent's backend actions belong to the conversation API (SSE/WebSocket). `model` names the agent
(`GET /v1/models`): a new conversation pins that agent's active configuration, and a conversation
named by the header keeps the configuration it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from streaming_gateway.api.following import follow, start_turn
from streaming_gateway.api.middlewares import PENDING_COUNT, counted_by_turn, principal
from streaming_gateway.api.openai_request import ChatCompletionIn, parse_request
from streaming_gateway.api.openai_response import Completion
from streaming_gateway.api.request_models import read_raw
from streaming_gateway.api.sse import comment_bytes
from streaming_gateway.chat.overrides import Overrides
from streaming_gateway.errors import BadRequest
from streaming_gateway.keys import catalog_key, engine_key, retention_key, settings_key, streams_key
from streaming_gateway.state.conversation_store import Conversation, ConversationStore, new_id
from streaming_gateway.state.log_follower import Follower

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

#: How many stored messages back the open tool calls are looked for: the last assistant message
#: and the tool results after it (a step has at most as many calls as the request has tools).
OPEN_CALLS_WINDOW = 256


@routes.post("/v1/chat/completions")
@counted_by_turn
async def chat_completions(request: web.Request) -> web.StreamResponse:
    settings, engine = request.app[settings_key], request.app[engine_key]
    caller = principal(request)
    user_id = caller.user_id
    body = parse_request(await read_raw(request, max_bytes=settings.max_body_bytes))
    catalog = request.app[catalog_key]
    cid = request.headers.get("X-Conversation-Id")
    conversation: Conversation | None = None
    if cid:
        conversation = await engine.store.owned(cid, user_id)
        config = await catalog.check_turn(caller, conversation.agent_config_version)
        if body.model != config.agent:
            await catalog.resolve(caller, body.model)  # 404 for a model the caller may not use
            raise BadRequest(
                f"Invalid value for 'model': conversation {cid} belongs to model '{config.agent}'.",
                field="model",
            )
        open_calls = await _open_tool_calls(engine.store, cid) if _has_tool_messages(body) else set()
    else:
        agent = await catalog.resolve(caller, body.model)
        cid = new_id("conv")
        # The gateway's own agent may be running a canary: its registry picks the version per conversation.
        config = (
            await catalog.for_new_conversation(caller, cid) if agent.agent == catalog.gateway_agent else agent
        )
        open_calls = set()
    policy = config.client_system_messages or settings.client_system_messages
    new_messages, client_system = _new_messages(
        body,
        settings.max_message_chars,
        whole=conversation is None,
        open_calls=open_calls,
        system_policy=policy,
    )
    retention = request.app[retention_key]
    stateless = conversation is None
    if conversation is None:
        # Written by the turn's own script (with its place in the user's index, in the user's script
        # sent at the same time: state/turn_setup.py). Kept briefly once answered
        # (state/retention.py); it counts towards the user's limit meanwhile.
        conversation = engine.store.new(user_id, config.version, cid=cid)
    overrides = Overrides(
        client_system=client_system,
        client_tools=body.tools or [],
        temperature=body.temperature,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        max_tokens_field="max_completion_tokens" if body.max_completion_tokens else "max_tokens",
        options=body.options(),
        traceparent=request.headers.get("traceparent"),
    )
    streams = request.app[streams_key]
    async with (
        streams.open("openai", user_id, slot_by_turn=True) as handle,
        follow(request.app, handle, conversation.id, turn_from=conversation.last_event_id) as follower,
    ):
        if stateless:
            retention.mark(conversation.id)  # before the answer starts: it may end at once
        try:
            after = await start_turn(
                request.app,
                follower,
                conversation,
                new_messages,
                overrides,
                handle=handle,
                count=request.get(PENDING_COUNT),
                create=stateless,
            )
        except BaseException:
            retention.forget(conversation.id)
            raise
        completion = Completion(
            conversation.id,
            conversation.agent_config_version,
            body.model,
            include_usage=body.include_usage(),
        )
        if body.stream:
            # The response starts at once unless the model may refuse a parameter the client chose
            # (that is a 400, answered before any token).
            return await _stream(request, follower, after, completion, early=not overrides.client_params())
        async for entry in follower.entries(after, until_end=False, until_step_end=True):
            if entry is not None:
                completion.add(entry)
        return web.json_response(
            completion.as_json(),
            status=completion.error_status if completion.error else 200,
            headers={"X-Conversation-Id": conversation.id},
        )


def _new_messages(
    body: ChatCompletionIn,
    max_chars: int,
    *,
    whole: bool,
    open_calls: set[str],
    system_policy: str,
) -> tuple[list[dict[str, Any]], str | None]:
    """The messages to store, and the client's system text (to append after the agent's prompt).

    With `whole` (a new conversation) that is the client's whole history: stateless clients
    (LangChain's and litellm's tool loops) send it all on every request. Its assistant tool calls
    may only name the request's own tools, whose results the client supplies anyway; the agent's
    tools are called by the model alone. Otherwise only the messages after the last assistant
    message are new: the rest is stored already.

    A system or developer message is refused (400 `client_system_message`) unless the agent's
    policy is `append`. A tool message must answer a tool call still open: one the gateway issued
    for the client's tools in this conversation (`open_calls`), or, in a whole history, one of
    the assistant message just before it; each call is answered once (400 `unknown_tool_call`).
    """
    system: list[str] = []
    for index, message in enumerate(body.messages):
        if message.role in {"system", "developer"}:
            if system_policy != "append":
                raise BadRequest(
                    f"Invalid value for 'messages[{index}].role': this agent's system prompt is the"
                    f" operator's; {message.role} messages are not accepted.",
                    code="client_system_message",
                    field=f"messages[{index}].role",
                )
            system.append(message.text())
    last_assistant = max((i for i, m in enumerate(body.messages) if m.role == "assistant"), default=-1)
    client_tools = {(tool.get("function") or {}).get("name") for tool in body.tools or []}
    stored: list[dict[str, Any]] = []
    open_calls = set(open_calls)
    for index in range(0 if whole else last_assistant + 1, len(body.messages)):
        message = body.messages[index]
        if message.role in {"system", "developer"}:
            continue
        text = message.text()
        if len(text) > max_chars:
            raise BadRequest(
                f"Invalid value for 'messages[{index}].content': {len(text)} characters;"
                f" the limit is {max_chars}.",
                code="message_too_long",
                field=f"messages[{index}].content",
            )
        if message.role == "tool":
            if not message.tool_call_id:
                raise BadRequest(
                    f"Missing required parameter: 'messages[{index}].tool_call_id'.",
                    code="missing_required_parameter",
                    field=f"messages[{index}].tool_call_id",
                )
            if message.tool_call_id not in open_calls:
                raise BadRequest(
                    f"Invalid value for 'messages[{index}].tool_call_id': {message.tool_call_id!r} answers"
                    " no open tool call of this conversation.",
                    code="unknown_tool_call",
                    field=f"messages[{index}].tool_call_id",
                )
            open_calls.discard(message.tool_call_id)
            stored.append({"role": "tool", "tool_call_id": message.tool_call_id, "content": text})
        elif message.role == "assistant":
            assistant = _assistant(index, text, message.tool_calls or [], client_tools)
            open_calls = {call["id"] for call in assistant.get("tool_calls", [])}
            stored.append(assistant)
        else:
            open_calls = set()
            stored.append({"role": "user", "content": text})
    if index_after(stored) is None:
        raise BadRequest(
            "Invalid value for 'messages': no user or tool message after the last assistant message.",
            field="messages",
        )
    return stored, "\n\n".join(system) or None


def _has_tool_messages(body: ChatCompletionIn) -> bool:
    return any(message.role == "tool" for message in body.messages)


async def _open_tool_calls(store: ConversationStore, cid: str) -> set[str]:
    """The tool calls of the conversation a client may still answer: those of its last assistant
    message when the gateway returned them to the client (its own tools), less those answered."""
    answered: set[str] = set()
    for message in reversed(await store.messages(cid, last=OPEN_CALLS_WINDOW)):
        if message.get("role") == "tool":
            answered.add(message.get("tool_call_id", ""))
            continue
        if message.get("role") == "assistant" and message.get("client_tools"):
            return {call["id"] for call in message.get("tool_calls") or []} - answered
        return set()
    return set()


def index_after(stored: list[dict[str, Any]]) -> int | None:
    """Where the new turn's messages start: after the last assistant message (None: nothing new)."""
    last = max((i for i, m in enumerate(stored) if m["role"] == "assistant"), default=-1)
    return last + 1 if last + 1 < len(stored) else None


def _assistant(
    index: int, text: str, calls: list[dict[str, Any]], client_tools: set[str | None]
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    shaped = []
    for number, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        param = f"messages[{index}].tool_calls[{number}]"
        if not (
            isinstance(function, dict)
            and isinstance(call.get("id"), str)
            and isinstance(function.get("name"), str)
            and isinstance(function.get("arguments"), str)
        ):
            raise BadRequest(
                f"Invalid value for '{param}': a function call needs id, name and arguments.", field=param
            )
        if function["name"] not in client_tools:
            raise BadRequest(
                f"Invalid value for '{param}': {function['name']!r} is not one of the request's tools.",
                field=f"{param}.function.name",
            )
        shaped.append(
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": function["name"], "arguments": function["arguments"]},
            }
        )
    if shaped:
        message["tool_calls"] = shaped
    return message


async def _stream(
    request: web.Request, follower: Follower, after: int, completion: Completion, *, early: bool
) -> web.StreamResponse:
    """The answer as OpenAI's stream of chunks. With `early` the headers and the opening chunk go out
    before the first event: the client's HTTP stack and SDK set up their stream while the model
    works, instead of after its first token (a client-side millisecond or more of the first token's
    wait, bench/README.md)."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "X-Conversation-Id": follower.conversation_id,
        }
    )

    async def start() -> None:
        if not response.prepared:
            await response.prepare(request)
            # With the headers, in one write.
            await response.write(
                comment_bytes("connected") + completion.chunk({"role": "assistant", "content": ""})
            )

    try:
        if early:
            # After the answer's task has had its turn: its model request goes out first, and the
            # headers are written while the model works.
            await asyncio.sleep(0)
            await start()
        # The entries already in hand go out in one write (one syscall, not one per token); the
        # last ones with the end of the response.
        out: list[bytes] = []
        async for entry in follower.entries(after, until_end=False, until_step_end=True):
            if not response.prepared:
                # The response starts with the first event (or heartbeat): a model refusing a
                # parameter the client passed does so before any token, and that is a 400, as the
                # API answers it, not an error inside a 200 stream.
                if entry is not None and entry.type == "error":
                    completion.add(entry)
                    if completion.error_status == 400:
                        return web.json_response(
                            {"error": completion.error},
                            status=400,
                            headers={"X-Conversation-Id": follower.conversation_id},
                        )
                await start()
                if completion.error is not None:
                    out.append(completion.error_event())
                    continue
            if entry is None:
                await response.write(comment_bytes("keep-alive"))
                continue
            chunk = completion.token_chunk(entry)
            if chunk is not None:
                out.append(chunk)
            elif (delta := completion.add(entry)) is not None:
                out.append(completion.chunk(delta))
            elif entry.type == "error":
                # As the API does: the error object, then the end of the stream (no finish, no [DONE]).
                out.append(completion.error_event())
            elif entry.type == "message_end" and completion.error is None:
                out.append(completion.finish_chunk())
                if completion.include_usage:
                    out.append(completion.usage_chunk())
                out.append(b"data: [DONE]\n\n")
            # After a message_end the entries end (until_step_end): it goes with the end below.
            if out and not follower.ready and entry.type != "message_end":
                await response.write(b"".join(out))
                out.clear()
        await start()  # the stream stopped (shutdown) before anything came
        await response.write_eof(b"".join(out))
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
            await start()
            await response.write(f"data: {json.dumps({'error': error})}\n\n".encode())
            await response.write_eof()
    return response
