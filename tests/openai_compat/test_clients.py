"""Third-party OpenAI clients against the real gateway: langchain-openai's ChatOpenAI, the litellm SDK
(`openai/<model>` with api_base = the gateway) and curl, each used the way its documentation shows.

These clients are stateless: they send the whole history on every request and no
X-Conversation-Id, so each request is a conversation of its own on the gateway.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest

from tests.fixtures.gateway import Gateway, make_token

# litellm fetches a price list from the internet at import unless told to use its bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import litellm.exceptions
from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

MODEL = "default"
WEATHER_RULES = [
    {"match": "weather", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
    {"match": "clear", "on_tool_result": True, "reply": "It is sunny in Oslo"},
]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return json.dumps({"city": city, "sky": "clear"})


def chat_openai(gateway: Gateway, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model=MODEL, base_url=gateway.url("/v1"), api_key=make_token(), max_retries=0, timeout=30, **kwargs
    )


def litellm_args(gateway: Gateway) -> dict[str, Any]:
    return {
        "model": f"openai/{MODEL}",
        "api_base": gateway.url("/v1"),
        "api_key": make_token(),
        "num_retries": 0,
    }


# -- langchain-openai ---------------------------------------------------------------------------


async def test_langchain_invoke(gateway: Gateway, script) -> None:
    """ChatOpenAI.ainvoke returns the answer with token usage."""
    await script([{"match": "", "reply": "Hello from the gateway"}])
    message = await chat_openai(gateway).ainvoke("hello")
    assert message.content == "Hello from the gateway"
    assert message.usage_metadata is not None and message.usage_metadata["output_tokens"] > 0
    assert message.response_metadata["finish_reason"] == "stop"


async def test_langchain_streaming(gateway: Gateway, script) -> None:
    """ChatOpenAI.astream yields the answer in several chunks, usage on the way (stream_usage)."""
    await script([{"match": "", "reply": "Streamed to LangChain in pieces"}])
    chunks = [chunk async for chunk in chat_openai(gateway, stream_usage=True).astream("hello")]
    assert "".join(str(chunk.content) for chunk in chunks) == "Streamed to LangChain in pieces"
    assert len([chunk for chunk in chunks if chunk.content]) > 1
    usage = [chunk.usage_metadata for chunk in chunks if chunk.usage_metadata]
    assert usage and usage[-1]["total_tokens"] > 0


async def test_langchain_tool_calling_round_trip(gateway: Gateway, script) -> None:
    """bind_tools: the model's call comes back as a LangChain tool call; the tool's result, sent with
    the whole history as LangChain does, gets the final answer."""
    await script(WEATHER_RULES)
    llm = chat_openai(gateway).bind_tools([get_weather])
    history: list[Any] = [HumanMessage("what is the weather in Oslo?")]
    reply = await llm.ainvoke(history)
    assert [(call["name"], call["args"]) for call in reply.tool_calls] == [("get_weather", {"city": "Oslo"})]
    history += [
        reply,
        ToolMessage(get_weather.invoke(reply.tool_calls[0]["args"]), tool_call_id=reply.tool_calls[0]["id"]),
    ]
    final = await llm.ainvoke(history)
    assert final.content == "It is sunny in Oslo"


async def test_langchain_streamed_tool_call(gateway: Gateway, script) -> None:
    """Streamed tool-call fragments add up to one LangChain tool call."""
    await script(WEATHER_RULES)
    llm = chat_openai(gateway).bind_tools([get_weather])
    merged: AIMessageChunk | None = None
    async for chunk in llm.astream("what is the weather?"):
        assert isinstance(chunk, AIMessageChunk)  # a chat model streams message chunks
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    assert [(call["name"], call["args"]) for call in merged.tool_calls] == [("get_weather", {"city": "Oslo"})]


async def test_langchain_structured_output_json_mode(gateway: Gateway, script, upstream) -> None:
    """with_structured_output(method="json_mode") sends response_format json_object and parses the answer."""
    await script([{"match": "", "reply": '{"city": "Oslo", "sky": "clear"}'}])
    llm = chat_openai(gateway).with_structured_output(method="json_mode")
    result = await llm.ainvoke("weather as JSON")
    assert result == {"city": "Oslo", "sky": "clear"}


# -- litellm SDK ----------------------------------------------------------------------------------


async def test_litellm_completion(gateway: Gateway, script) -> None:
    """litellm.acompletion with the openai/ provider gets the answer and usage."""
    await script([{"match": "", "reply": "Hello litellm"}])
    response = await litellm.acompletion(
        messages=[{"role": "user", "content": "hi"}], **litellm_args(gateway)
    )
    assert response.choices[0].message.content == "Hello litellm"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.total_tokens > 0


async def test_litellm_streaming(gateway: Gateway, script) -> None:
    """litellm's stream yields the answer in chunks; with include_usage its last chunk carries usage."""
    await script([{"match": "", "reply": "Streamed to litellm in pieces"}])
    stream = await litellm.acompletion(
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
        **litellm_args(gateway),
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "Streamed to litellm in pieces"
    usage = [getattr(chunk, "usage", None) for chunk in chunks]
    assert any(u is not None and u.total_tokens > 0 for u in usage)


async def test_litellm_tool_calling(gateway: Gateway, script) -> None:
    """litellm returns the call in OpenAI's shape, and the answer to the whole history with the result."""
    await script(WEATHER_RULES)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "weather in Oslo?"}]
    response = await litellm.acompletion(messages=messages, tools=[WEATHER_TOOL], **litellm_args(gateway))
    call = response.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
    messages += [
        response.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'},
    ]
    final = await litellm.acompletion(messages=messages, tools=[WEATHER_TOOL], **litellm_args(gateway))
    assert final.choices[0].message.content == "It is sunny in Oslo"


async def test_litellm_sees_gateway_errors_as_its_exceptions(gateway: Gateway, script) -> None:
    """A bad token is litellm's AuthenticationError; an upstream failure its BadGatewayError, not a hang."""
    with pytest.raises(litellm.exceptions.AuthenticationError):
        await litellm.acompletion(
            messages=[{"role": "user", "content": "hi"}], **{**litellm_args(gateway), "api_key": "not-a-jwt"}
        )
    await script([{"match": "", "error": {"status": 500, "message": "model exploded"}}])
    with pytest.raises(litellm.exceptions.BadGatewayError, match="model exploded") as raised:
        await litellm.acompletion(messages=[{"role": "user", "content": "hi"}], **litellm_args(gateway))
    assert raised.value.status_code == 502


# -- curl -------------------------------------------------------------------------------------------


async def curl(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        "30",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return process.returncode, out.decode()


async def test_curl_completion_as_documented(gateway: Gateway, script) -> None:
    """The API reference's curl example, pointed at the gateway, gets a chat.completion."""
    await script([{"match": "", "reply": "Hello curl"}])
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hello!"}]})
    _, out = await curl(
        gateway.url("/v1/chat/completions"),
        "-H",
        "Content-Type: application/json",
        "-H",
        f"Authorization: Bearer {make_token()}",
        "-d",
        body,
    )
    completion = json.loads(out)
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == "Hello curl"


async def test_curl_streaming(gateway: Gateway, script) -> None:
    """curl -N with stream true prints data: lines ending with data: [DONE]."""
    await script([{"match": "", "reply": "Hello streaming curl"}])
    body = json.dumps({"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "Hello!"}]})
    _, out = await curl(
        "-N",
        gateway.url("/v1/chat/completions"),
        "-H",
        "Content-Type: application/json",
        "-H",
        f"Authorization: Bearer {make_token()}",
        "-d",
        body,
    )
    data = [line.removeprefix("data: ") for line in out.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Hello streaming curl"


async def test_curl_models(gateway: Gateway) -> None:
    """curl /v1/models lists the agent as a model."""
    _, out = await curl(gateway.url("/v1/models"), "-H", f"Authorization: Bearer {make_token()}")
    assert MODEL in [model["id"] for model in json.loads(out)["data"]]
