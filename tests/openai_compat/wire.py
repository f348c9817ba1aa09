"""Raw HTTP to the gateway's OpenAI API: bodies and stream chunks exactly as a client receives them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import openai
from openai.types.chat import ChatCompletionMessage, ChatCompletionMessageFunctionToolCall

from tests.fixtures.gateway import Gateway
from tests.gateway.sse_client import SseParser


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class Stream:
    status: int
    headers: dict[str, str]
    #: Every `data:` payload other than the closing `[DONE]`, parsed.
    chunks: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False

    def text(self) -> str:
        return "".join(
            choice["delta"].get("content") or ""
            for chunk in self.chunks
            for choice in chunk.get("choices", [])
        )


async def post(gateway: Gateway, body: Any, *, user: str | None = "alice", **headers: str) -> Answer:
    async with gateway.request("POST", "/v1/chat/completions", user, json=body, headers=headers) as response:
        return Answer(response.status, await response.json(), dict(response.headers))


async def get(gateway: Gateway, path: str, *, user: str | None = "alice") -> Answer:
    async with gateway.request("GET", path, user) as response:
        return Answer(response.status, await response.json(), dict(response.headers))


async def stream(gateway: Gateway, body: dict[str, Any], *, user: str = "alice", **headers: str) -> Stream:
    """POST with stream true and read the SSE answer to its end (the gateway closes it after [DONE])."""
    async with gateway.request(
        "POST", "/v1/chat/completions", user, json={**body, "stream": True}, headers=headers
    ) as response:
        result = Stream(response.status, dict(response.headers))
        if response.status != 200:
            result.chunks.append(await response.json())
            return result
        parser = SseParser()
        async for piece in response.content.iter_any():
            for event in parser.feed(piece):
                assert not result.done, f"data after [DONE]: {event.data!r}"
                if event.data == "[DONE]":
                    result.done = True
                else:
                    result.chunks.append(json.loads(event.data))
        return result


def error_body(error: openai.APIStatusError) -> dict[str, Any]:
    """The error object of an OpenAI-shaped error answer (the SDK types the body as any JSON)."""
    assert isinstance(error.body, dict), f"error body {error.body!r} is not an object"
    return error.body


def function_calls(message: ChatCompletionMessage) -> list[ChatCompletionMessageFunctionToolCall]:
    """The message's tool calls; the gateway makes function calls only (no custom tool calls)."""
    calls = message.tool_calls or []
    functions = [call for call in calls if isinstance(call, ChatCompletionMessageFunctionToolCall)]
    assert functions == calls, f"not all function calls: {calls!r}"
    return functions
