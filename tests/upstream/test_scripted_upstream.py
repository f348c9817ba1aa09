"""The scripted upstream speaks OpenAI's wire format well enough for the real `openai` SDK."""

from __future__ import annotations

import json

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from openai import APIStatusError, AsyncAzureOpenAI, AsyncOpenAI


def client_for(base_url: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=base_url, api_key="local", max_retries=0)


async def set_script(upstream: TestServer, script: dict[str, object]) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.put(upstream.make_url("/_control/script"), json=script) as response:
            assert response.status == 200, await response.text()


async def test_streams_text_with_usage(upstream_base_url: str) -> None:
    """A streamed answer arrives as chunks ending in finish_reason stop and a usage chunk."""
    client = client_for(upstream_base_url)
    stream = await client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "hi there"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert "You said: hi there" in text
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == len(text.split())


async def test_tool_call_fragments_assemble(upstream: TestServer, upstream_base_url: str) -> None:
    """A scripted tool call streams as fragments that join into the scripted JSON arguments."""
    arguments = {"title": "a fairly long ticket title to force fragments", "priority": "high"}
    await set_script(
        upstream,
        {"rules": [{"match": "ticket", "tool_calls": [{"name": "create_ticket", "arguments": arguments}]}]},
    )
    stream = await client_for(upstream_base_url).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "open a ticket"}], stream=True
    )
    name, parts, finish = None, [], None
    async for chunk in stream:
        delta = chunk.choices[0].delta
        for call in delta.tool_calls or []:
            assert call.function is not None
            name = call.function.name or name
            parts.append(call.function.arguments or "")
        finish = chunk.choices[0].finish_reason or finish
    assert name == "create_ticket" and finish == "tool_calls"
    assert json.loads("".join(parts)) == arguments
    assert len([p for p in parts if p]) > 1


async def test_non_streaming_answer(upstream_base_url: str) -> None:
    """stream=false returns one chat.completion object with usage."""
    completion = await client_for(upstream_base_url).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "ping"}]
    )
    content = completion.choices[0].message.content
    assert content is not None and content.endswith("ping")
    assert completion.usage is not None and completion.usage.total_tokens > 0


async def test_rule_can_withhold_usage(upstream: TestServer, upstream_base_url: str) -> None:
    """A rule with usage false reports no usage, streamed (even when asked) or not."""
    await set_script(upstream, {"rules": [{"match": "", "reply": "quiet", "usage": False}]})
    client = client_for(upstream_base_url)
    completion = await client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "x"}]
    )
    assert completion.usage is None
    stream = await client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)


async def test_scripted_error_reaches_sdk(upstream: TestServer, upstream_base_url: str) -> None:
    """A scripted 429 arrives at the SDK as a status error carrying Retry-After."""
    await set_script(upstream, {"rules": [{"match": "", "error": {"status": 429, "retry_after": 2}}]})
    with pytest.raises(APIStatusError) as info:
        await client_for(upstream_base_url).chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "2.0"


async def test_max_tokens_cuts_with_length(upstream: TestServer, upstream_base_url: str) -> None:
    """max_tokens shorter than the answer ends it early with finish_reason length."""
    await set_script(upstream, {"rules": [{"match": "", "tokens": 50}]})
    completion = await client_for(upstream_base_url).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "x"}], max_tokens=5
    )
    assert completion.choices[0].finish_reason == "length"
    content = completion.choices[0].message.content
    assert content is not None and len(content.split()) == 5


async def test_azure_path_works_with_azure_client(upstream: TestServer) -> None:
    """The Azure OpenAI deployment path serves AsyncAzureOpenAI unchanged."""
    client = AsyncAzureOpenAI(
        azure_endpoint=str(upstream.make_url("/")).rstrip("/"),
        api_key="k",
        api_version="2024-10-21",
        max_retries=0,
    )
    completion = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "yo"}]
    )
    assert completion.model == "gpt-4o"
    content = completion.choices[0].message.content
    assert content is not None and content.endswith("yo")


async def test_bad_request_is_400(upstream: TestServer) -> None:
    """A body without messages is answered 400 in OpenAI's error shape."""
    async with aiohttp.ClientSession() as session:
        async with session.post(upstream.make_url("/v1/chat/completions"), json={"model": "x"}) as response:
            assert response.status == 400
            assert "messages" in (await response.json())["error"]["message"]
