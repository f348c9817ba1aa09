"""The HTTP side of the scripted upstream: OpenAI's chat completions wire format, streamed or not.

Serves both the OpenAI path (`/v1/chat/completions`) and the Azure OpenAI path
(`/openai/deployments/{deployment}/chat/completions`). Control endpoints under `/_control/`
let tests and benchmarks swap the script and read what the server saw.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from scripted_upstream.script import Rule, Script, split_tokens


@dataclass
class UpstreamStats:
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=200))
    streams_started: int = 0
    streams_finished: int = 0
    streams_cancelled: int = 0
    active_streams: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": list(self.requests),
            "streams_started": self.streams_started,
            "streams_finished": self.streams_finished,
            "streams_cancelled": self.streams_cancelled,
            "active_streams": self.active_streams,
        }


@dataclass
class UpstreamState:
    """Mutable: tests swap the script and reset the stats while the server runs."""

    script: Script
    stats: UpstreamStats = field(default_factory=UpstreamStats)


state_key = web.AppKey("state", UpstreamState)


def _error(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
    *,
    param: str | None = None,
    code: str | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _usage(messages: list[dict[str, Any]], completion_tokens: int) -> dict[str, int]:
    prompt_tokens = sum(len(split_tokens(str(m.get("content") or ""))) + 3 for m in messages)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _tool_calls(rule: Rule, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }
        for name, arguments in rule.render_tool_calls(messages)
    ]


async def chat_completions(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "request body is not valid JSON")
    if not isinstance(body, dict):
        return _error(400, "request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return _error(400, "'messages' must be a non-empty array of objects")
    stats = request.app[state_key].stats
    stats.requests.append(body)
    script = request.app[state_key].script
    rule = script.pick(messages)
    if rule.error is not None:
        headers = {"Retry-After": str(rule.error.retry_after)} if rule.error.retry_after is not None else None
        spec = rule.error
        return _error(spec.status, spec.message, spec.type, headers, param=spec.param, code=spec.code)

    model = body.get("model") or request.match_info.get("deployment") or "scripted"
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    chunks = split_tokens(rule.render_reply(messages))
    finish_reason = "tool_calls" if rule.tool_calls else "stop"
    if isinstance(max_tokens, int) and 0 < max_tokens < len(chunks):
        chunks, finish_reason = chunks[:max_tokens], "length"
    tool_calls = _tool_calls(rule, messages) if finish_reason == "tool_calls" else []
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())

    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": "".join(chunks) or None, "refusal": None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        completion: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_scripted",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        }
        if rule.usage:
            completion["usage"] = _usage(messages, len(chunks) + len(tool_calls))
        return web.json_response(completion)

    include_usage = rule.usage and bool((body.get("stream_options") or {}).get("include_usage"))
    token_delay = (rule.token_delay_ms or script.default_token_delay_ms) / 1000
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)

    def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_scripted",
            "choices": []
            if usage
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage:
            payload["usage"] = usage
        return f"data: {json.dumps(payload)}\n\n".encode()

    stats.streams_started += 1
    stats.active_streams += 1
    try:
        if rule.first_token_delay_ms:
            await asyncio.sleep(rule.first_token_delay_ms / 1000)
        await response.write(chunk({"role": "assistant", "content": ""}))
        for index, text in enumerate(chunks):
            if rule.drop_after is not None and index >= rule.drop_after:
                # Simulate the upstream vanishing mid-answer: no [DONE], connection closed.
                if request.transport is not None:
                    request.transport.close()
                return response
            if token_delay:
                await asyncio.sleep(token_delay)
            await response.write(chunk({"content": text}))
        for index, call in enumerate(tool_calls):
            head = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            await response.write(chunk({"tool_calls": [head]}))
            arguments = call["function"]["arguments"]
            for start in range(0, len(arguments), 16):  # fragments, as the real API sends them
                await response.write(
                    chunk(
                        {
                            "tool_calls": [
                                {"index": index, "function": {"arguments": arguments[start : start + 16]}}
                            ]
                        }
                    )
                )
        await response.write(chunk({}, finish=finish_reason))
        if include_usage:
            await response.write(chunk({}, usage=_usage(messages, len(chunks) + len(tool_calls))))
        await response.write(b"data: [DONE]\n\n")
        stats.streams_finished += 1
    except (ConnectionResetError, asyncio.CancelledError):
        stats.streams_cancelled += 1
        raise
    finally:
        stats.active_streams -= 1
    return response


async def list_models(request: web.Request) -> web.Response:
    return web.json_response(
        {"object": "list", "data": [{"id": "scripted", "object": "model", "created": 0, "owned_by": "local"}]}
    )


async def put_script(request: web.Request) -> web.Response:
    try:
        request.app[state_key].script = Script.model_validate(await request.json())
    except (ValidationError, json.JSONDecodeError) as exc:
        return _error(422, str(exc))
    return web.json_response({"ok": True})


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[state_key].stats.as_dict())


async def reset_stats(request: web.Request) -> web.Response:
    request.app[state_key].stats = UpstreamStats()
    return web.json_response({"ok": True})


def create_upstream_app(script: Script | None = None) -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[state_key] = UpstreamState(script or Script.load())
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_put("/_control/script", put_script)
    app.router.add_get("/_control/stats", get_stats)
    app.router.add_post("/_control/reset", reset_stats)
    return app
