"""The model request the adapter makes through the SDK's lower-level `request` (its options built
once and copied per request, the body serialised by the adapter) is the one the SDK's own
`chat.completions.create` sends: method, path, query, headers and JSON body, for OpenAI and for
Azure OpenAI (api key, and an Azure AD token provider asked per request); a retry sends it again;
an answer's connection is pooled once its body ends after `[DONE]`, and not when it stays open."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
from typing import Any

import openai

from streaming_gateway.llm.openai_adapter import OpenAIChatModel, create_chat_model
from streaming_gateway.llm.port import ChatDelta, ChatRequest, Finish, TextDelta
from streaming_gateway.settings import Settings
from tests.llm.servers import BASE_ENV, SSE_HEAD, RawUpstream, delta, event, status_answer
from tests.polling import eventually

ANSWER = SSE_HEAD + delta("ok") + delta(finish="stop") + event("[DONE]") + b"0\r\n\r\n"
#: Headers that differ between any two requests of the SDK (its idempotency key is per request).
PER_REQUEST = {"x-stainless-idempotency", "idempotency-key"}
REQUEST = ChatRequest(
    model="gpt-4o",
    messages=[{"role": "system", "content": "Be brief, é."}, {"role": "user", "content": "hi"}],
    tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    temperature=0.5,
    max_tokens=7,
    options={"seed": 3, "stream": False},
)


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(ANSWER)
    await writer.drain()


async def collect(model: OpenAIChatModel, request: ChatRequest = REQUEST) -> list[ChatDelta]:
    return [item async for item in model.stream(request)]


async def sdk_create(client: openai.AsyncOpenAI, model: str = "gpt-4o") -> None:
    """The same request through the SDK's own chat completions call, read to its end."""
    # The messages and tools are plain dicts, not the SDK's typed params.
    stream = await client.chat.completions.create(  # type: ignore[call-overload]
        model=model,
        messages=REQUEST.messages,
        tools=REQUEST.tools,
        temperature=0.5,
        max_tokens=7,
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for _ in stream:
        pass


def parsed(request: tuple[bytes, bytes]) -> tuple[str, dict[str, str], Any]:
    """The request line, the headers but the per-request ones (lower-cased names) and the JSON body."""
    head, body = request
    line, *fields = head.decode().rstrip("\r\n").split("\r\n")
    headers = {}
    for field in fields:
        name, _, value = field.partition(":")
        if name.lower() not in PER_REQUEST:
            headers[name.lower()] = value.strip()
    return line, headers, json.loads(body)


async def test_the_request_is_the_one_the_sdks_own_call_sends(models, raw_upstream) -> None:
    """OpenAI: the adapter's request (twice: the shared options are not changed by one) and the
    SDK's `chat.completions.create` send the same line, headers and body."""
    server = await raw_upstream(answer)
    model = models(server.url)
    assert (await collect(model))[0] == TextDelta("ok")
    await collect(model)
    await sdk_create(model._client)
    ours, again, sdks = (parsed(request) for request in server.requests)
    assert ours == again == sdks
    line, headers, body = ours
    assert line == "POST /v1/chat/completions HTTP/1.1" and headers["authorization"] == "Bearer test"
    assert body["stream"] is True and body["seed"] == 3 and body["max_tokens"] == 7


async def test_azure_with_a_key_sends_the_sdks_own_request(raw_upstream) -> None:
    """Azure OpenAI with an api key: the deployment path (a model name the path must escape too),
    api-version and `api-key` as the SDK's own call sends them."""
    server = await raw_upstream(answer)
    settings = Settings.from_env(
        {**BASE_ENV, "AZURE_OPENAI_ENDPOINT": server.url.removesuffix("/v1"), "AZURE_OPENAI_API_KEY": "k"}
    )
    model = create_chat_model(settings)
    try:
        for name in ("gpt-4o", "my model:v1/x"):
            await collect(model, dataclasses.replace(REQUEST, model=name))
            await sdk_create(model._client, name)
    finally:
        await model.close()
    ours, sdks, odd_ours, odd_sdks = (parsed(request) for request in server.requests)
    assert ours == sdks and odd_ours == odd_sdks
    assert ours[0].startswith("POST /openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21 ")
    assert odd_ours[0].startswith("POST /openai/deployments/my%20model:v1%2Fx/chat/completions?")
    assert ours[1]["api-key"] == "k" and "authorization" not in ours[1]


async def test_azure_ad_tokens_are_asked_for_each_request(raw_upstream) -> None:
    """Azure OpenAI with a token provider: each request carries the token the provider gave it."""
    server = await raw_upstream(answer)
    tokens = iter(["token-1", "token-2"])

    async def provider() -> str:
        return next(tokens)

    client = openai.AsyncAzureOpenAI(
        azure_endpoint=server.url.removesuffix("/v1"),
        api_version="2024-10-21",
        azure_ad_token_provider=provider,
        http_client=openai.DefaultAioHttpClient(),
    )
    model = OpenAIChatModel(client)
    try:
        await collect(model)
        await collect(model)
    finally:
        await model.close()
    first, second = (parsed(request)[1] for request in server.requests)
    assert first["authorization"] == "Bearer token-1" and second["authorization"] == "Bearer token-2"
    assert "api-key" not in first


async def test_a_retry_sends_the_same_request_again(models, raw_upstream) -> None:
    """A 503 and then the answer: the SDK's retry sends the same body, counted in its header."""
    failing = status_answer(503, {"error": {"message": "busy"}})

    async def fail_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await (failing if len(server.requests) == 1 else answer)(reader, writer)

    server = await raw_upstream(fail_once)
    items = await collect(models(server.url))
    assert isinstance(items[-1], Finish)
    (_, first, body), (_, second, again) = (parsed(request) for request in server.requests)
    assert server.requests[0][1] == server.requests[1][1] and body == again
    assert (first["x-stainless-retry-count"], second["x-stainless-retry-count"]) == ("0", "1")


async def test_a_connection_is_pooled_when_its_body_ends_after_done(models, raw_upstream) -> None:
    """The body's end arriving after `[DONE]` was read: read to it, the connection serves the next
    answer (closed at `[DONE]`, every answer would need a new connection, and TLS handshake)."""
    done_sent = asyncio.Event()

    async def end_apart(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + delta("ok") + delta(finish="stop") + event("[DONE]"))
        await writer.drain()
        done_sent.set()
        await ended.wait()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    server = await raw_upstream(end_apart)
    model = models(server.url)
    for _ in range(3):
        done_sent.clear()
        ended = asyncio.Event()
        stream = model.stream(REQUEST)
        assert await anext(stream) == TextDelta("ok")
        await done_sent.wait()
        # The finish is asked for before the server is let go: the reader is waiting when the end comes.
        finishing = asyncio.ensure_future(anext(stream))
        ended.set()
        assert isinstance(await finishing, Finish)
        await stream.aclose()
    assert server.connections == 1 and len(server.requests) == 3


async def test_a_body_left_open_after_done_still_finishes(models, raw_upstream) -> None:
    """A server that never ends the body after `[DONE]`: the answer finishes, the connection is
    closed (not pooled half-read) and the next answer opens another."""

    async def never_ends(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + delta("ok") + delta(finish="stop") + event("[DONE]") + event("{}"))
        await writer.drain()
        await server.wait_for_close(reader)
        writer.close()

    server = await raw_upstream(never_ends)
    model = models(server.url)
    for _ in range(2):
        first, finish = await collect(model)
        assert first == TextDelta("ok") and isinstance(finish, Finish) and finish.reason == "stop"
    await eventually(lambda: closed_twice(server), "the server to see both connections closed")
    assert server.connections == 2


async def closed_twice(server: RawUpstream) -> bool:
    return server.closed_by_client == 2


async def test_a_compressed_event_stream_is_decoded(models, raw_upstream) -> None:
    """A body with a content encoding (the SDK's client accepts gzip) is read decoded."""
    events = event({"choices": [{"index": 0, "delta": {"content": "zip"}, "finish_reason": "stop"}]})
    body = gzip.compress(b"".join(chunk.split(b"\r\n", 1)[1][:-2] for chunk in (events, event("[DONE]"))))

    async def gzipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()

    server = await raw_upstream(gzipped)
    items = await collect(models(server.url))
    assert items[0] == TextDelta("zip") and isinstance(items[1], Finish)
