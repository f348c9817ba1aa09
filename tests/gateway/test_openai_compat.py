"""The official `openai` SDK, pointed at the gateway, works unchanged: streamed and not, tools too."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam

from tests.fixtures.gateway import Gateway, StartGateway, make_token, upstream_stats
from tests.openai_compat.wire import error_body, function_calls

#: A role the SDK's types do not allow, sent on purpose: the gateway must refuse it.
NO_SUCH_ROLE: Any = [{"role": "wizard", "content": "x"}]


def sdk(gateway: Gateway, user: str = "alice", token: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url("/v1"), api_key=token or make_token(user), max_retries=0)


async def test_sdk_completion_without_streaming(gateway: Gateway, script) -> None:
    """A plain create() returns the model's answer and names the new conversation in a header."""
    await script([{"match": "", "reply": "Plain answer here"}])
    async with sdk(gateway) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "user", "content": "hello"}]
        )
        completion = raw.parse()
    assert completion.choices[0].message.content == "Plain answer here"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    cid = raw.headers["X-Conversation-Id"]
    stored = await (await gateway.request("GET", f"/v1/conversations/{cid}")).json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]


async def test_sdk_streaming_with_usage(gateway: Gateway, script) -> None:
    """stream=True yields chunks the SDK parses; the last carries usage when asked for."""
    await script([{"match": "", "reply": "Streamed answer comes in pieces"}])
    async with sdk(gateway) as client:
        stream = await client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streamed answer comes in pieces"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


async def test_conversation_header_gives_server_side_history(gateway: Gateway, script, upstream) -> None:
    """With X-Conversation-Id a client sending only its new message still gets the whole history."""
    await script([{"match": "", "reply": "noted"}])
    async with sdk(gateway) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="default",
            messages=[{"role": "user", "content": "my name is Ada"}],
        )
        cid = raw.headers["X-Conversation-Id"]
        await client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "what is my name?"}],
            extra_headers={"X-Conversation-Id": cid},
        )
        # A client that does keep history sends it all: nothing is stored twice.
        await client.chat.completions.create(
            model="default",
            extra_headers={"X-Conversation-Id": cid},
            messages=[
                {"role": "user", "content": "my name is Ada"},
                {"role": "assistant", "content": "noted"},
                {"role": "user", "content": "what is my name?"},
                {"role": "assistant", "content": "noted"},
                {"role": "user", "content": "thanks"},
            ],
        )
    requests = (await upstream_stats(upstream))["requests"]
    assert requests[1]["messages"][0]["role"] == "system"
    assert [(m["role"], m["content"]) for m in requests[2]["messages"][1:]] == [
        ("user", "my name is Ada"),
        ("assistant", "noted"),
        ("user", "what is my name?"),
        ("assistant", "noted"),
        ("user", "thanks"),
    ]


async def test_client_tools_come_back_in_openai_shape(gateway: Gateway, script) -> None:
    """Tools the caller defines are offered to the model and its calls returned as OpenAI tool_calls,
    streamed (fragments assembled by the SDK's own accumulator) and not."""
    await script(
        [
            {"match": "weather", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
            {"match": "", "on_tool_result": True, "reply": "It is sunny"},
        ]
    )
    tools: list[ChatCompletionFunctionToolParam] = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    async with sdk(gateway) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="default", tools=tools, messages=[{"role": "user", "content": "weather?"}]
        )
        completion = raw.parse()
        call = function_calls(completion.choices[0].message)[0]
        assert completion.choices[0].finish_reason == "tool_calls"
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
        cid = raw.headers["X-Conversation-Id"]
        answer = await client.chat.completions.create(
            model="default",
            tools=tools,
            extra_headers={"X-Conversation-Id": cid},
            messages=[{"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'}],
        )
        assert answer.choices[0].message.content == "It is sunny"

        async with client.chat.completions.stream(
            model="default", tools=tools, messages=[{"role": "user", "content": "weather again?"}]
        ) as stream:
            final = await stream.get_final_completion()
    streamed_call = function_calls(final.choices[0].message)[0]
    assert streamed_call.function.name == "get_weather"
    assert json.loads(streamed_call.function.arguments) == {"city": "Oslo"}


async def test_sdk_sees_upstream_errors(gateway: Gateway, script) -> None:
    """An upstream failure reaches the SDK as an API error, streamed or not, never a hang."""
    await script([{"match": "", "error": {"status": 500, "message": "model exploded"}}])
    async with sdk(gateway) as client:
        with pytest.raises(openai.APIStatusError) as raised:
            await client.chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}])
        assert raised.value.status_code == 502 and "model exploded" in raised.value.message
        stream = await client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x"}], stream=True
        )
        with pytest.raises(openai.APIError, match="model exploded"):
            async for _ in stream:
                pass


async def test_sdk_bad_token_and_bad_request(gateway: Gateway) -> None:
    """A bad key is the SDK's AuthenticationError; an invalid request its BadRequestError (400)."""
    async with sdk(gateway, token="not-a-jwt") as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}])
    async with sdk(gateway) as client:
        with pytest.raises(openai.BadRequestError) as raised:
            await client.chat.completions.create(model="default", messages=NO_SUCH_ROLE)
        assert error_body(raised.value)["param"] == "messages[0].role"
        with pytest.raises(openai.BadRequestError) as raised:
            await client.chat.completions.create(
                model="default", messages=[{"role": "assistant", "content": "x"}]
            )
        assert error_body(raised.value)["param"] == "messages"


async def test_stream_starts_before_the_first_token(start_gateway: StartGateway, script, aredis) -> None:
    """With no parameter of the client's that the model could refuse, the headers and the opening
    chunk come while the model is still silent (the client sets up its stream meanwhile), not with
    its first token or a keep-alive; the answer follows on the same stream."""
    gateway = await start_gateway(GATEWAY_HEARTBEAT_SECONDS="60")
    await script([{"match": "", "reply": "late but whole", "first_token_delay_ms": 3000}])
    async with gateway.session.post(
        gateway.url("/v1/chat/completions"),
        json={"model": "default", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"Authorization": f"Bearer {make_token()}"},
    ) as response:
        assert response.status == 200
        cid = response.headers["X-Conversation-Id"]
        opening = b""
        while b'"role": "assistant"' not in opening and b'"role":"assistant"' not in opening:
            opening += await response.content.readany()
        assert await aredis.xlen(f"gw:conv:{{{cid}}}:log") == 0  # nothing from the model yet
        rest = (await response.content.read()).decode()
    chunks = [json.loads(line[6:]) for line in rest.splitlines() if line.startswith("data: {")]
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        == "late but whole"
    )
    assert rest.rstrip().endswith("data: [DONE]")
