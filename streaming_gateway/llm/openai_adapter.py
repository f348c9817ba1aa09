"""The LLM adapter over the `openai` SDK: `AsyncOpenAI`, or `AsyncAzureOpenAI` when configured.

The only module of the gateway that imports the SDK.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import anyio
import httpx2
import openai
import orjson
from openai._models import FinalRequestOptions

from streaming_gateway.llm.port import (
    ChatDelta,
    ChatRequest,
    Finish,
    LLMBadParameter,
    LLMError,
    LLMRejected,
    LLMTimeout,
    LLMUnavailable,
    TextDelta,
    ToolCallAssembler,
    estimate_usage,
)
from streaming_gateway.llm.sse_decoding import sse_json
from streaming_gateway.settings import Settings

log = logging.getLogger(__name__)

#: The scripted upstream needs no key, but the SDK refuses to start without one.
SCRIPTED_API_KEY = "scripted-local"
AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"
#: The model API's path under the client's base URL (Azure's client puts its deployment path in front).
CHAT_COMPLETIONS = "/chat/completions"
#: Upstream statuses that mean "this request is wrong" (not auth, quota or the provider's fault).
CLIENT_ERROR_STATUSES = frozenset({400, 422})
#: Model connections one gateway process may hold at once: every answer being written holds one for
#: its length (the SDK's own default; a request past it waits for a free one, up to the timeout).
MAX_UPSTREAM_CONNECTIONS = 1000
#: How long an idle upstream connection is kept for the next answer (httpx's default).
UPSTREAM_KEEPALIVE_S = 5.0
#: What a deployment name keeps unescaped in the path: RFC 3986's `pchar`, as the SDK escapes it.
PATH_SEGMENT_SAFE = "!$&'()*+,;=:@"
#: How long the end of an answer's body may take after its `[DONE]` for the connection to be pooled.
BODY_END_WAIT_S = 0.02
#: Errors while reading the body (the SDK reports only those before the headers): the HTTP client's,
#: as its aiohttp transport maps them to httpx2's, or aiohttp's own where the transport leaves one
#: unmapped; TLS, and the socket ending mid-read (a timeout of `asyncio.timeout` too).
READ_ERRORS = (httpx2.RequestError, aiohttp.ClientError, TimeoutError, ssl.SSLError, anyio.EndOfStream)


class OpenAIChatModel:
    def __init__(self, client: openai.AsyncOpenAI, credential: Any = None) -> None:
        self._client = client
        self._credential = credential
        # The SDK's request options, built once: `post` builds them per request through pydantic's
        # `model_construct`, which deep-copies each default (bench/README.md, "The model request's
        # CPU"); a request copies these shallowly, as the SDK itself does for every attempt. The
        # type is the SDK's internal one: tests/llm/test_model_request.py checks the request sent
        # against the SDK's own `chat.completions.create`, so a change of it fails there.
        self._options = FinalRequestOptions.construct(method="post", url=CHAT_COMPLETIONS, content=b"")
        # Azure OpenAI's deployment path (`/deployments/{model}/chat/completions`) is the SDK's to
        # add, but only from a body it serialises itself (`json_data`); for a body sent as bytes
        # the path is given here, under the client's base URL `{endpoint}/openai/`.
        self._azure = isinstance(client, openai.AsyncAzureOpenAI)
        self._paths: dict[str, str] = {}

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatDelta, None]:
        options = self._options.model_copy(
            update={"url": self._path(request.model), "content": _body(request)}
        )
        assembler = ToolCallAssembler()
        finish_reason: str | None = None
        usage: dict[str, int] | None = None
        written: list[str] = []
        try:
            # The SDK makes the request (auth, Azure's api-version, retries of the connect and of
            # 429/5xx, status errors, timeouts) and hands over the raw HTTP response; its chunks are
            # read here as plain JSON, not built into SDK objects one by one (a large share of its
            # CPU per token in the profile), and the body is posted as bytes serialised here:
            # `chat.completions.create` would first walk it through the SDK's type transforms,
            # and `post` serialises it with the standard library's json (bench/README.md).
            response = await self._client.request(httpx2.Response, options, stream=True)
            reads = response.aiter_bytes()
            try:
                async for chunks in sse_json(reads):
                    for chunk in chunks:
                        if chunk.get("error"):
                            raise LLMUnavailable(f"the model's stream failed: {chunk['error']}")
                        counts = chunk.get("usage")
                        if counts:
                            usage = {
                                "prompt_tokens": counts.get("prompt_tokens", 0),
                                "completion_tokens": counts.get("completion_tokens", 0),
                                "total_tokens": counts.get("total_tokens", 0),
                            }
                        for choice in chunk.get("choices") or ():
                            delta = choice.get("delta")
                            if delta:
                                content = delta.get("content")
                                if content:
                                    written.append(content)
                                    yield TextDelta(content)
                                for call in delta.get("tool_calls") or ():
                                    function = call.get("function") or {}
                                    assembler.add(
                                        call.get("index", 0),
                                        call.get("id"),
                                        function.get("name"),
                                        function.get("arguments"),
                                    )
                            if choice.get("finish_reason"):
                                finish_reason = choice["finish_reason"]
                await _end_of_body(reads)
            finally:
                # However the reading ends (the end, a cancel, an early exit) the HTTP response is
                # closed: the upstream sees the disconnect and stops generating.
                await response.aclose()
        except openai.APIError as exc:
            raise _translate(exc, request.client_params) from exc
        except READ_ERRORS as exc:
            if _timed_out(exc):
                raise LLMTimeout("the model did not answer in time") from exc
            raise LLMUnavailable(f"the model's stream failed: {exc!r}") from exc
        if finish_reason is None:
            raise LLMUnavailable("the model's stream ended without a finish reason")
        calls = assembler.calls()
        if usage is None:
            # Some OpenAI-compatible servers never report usage; clients of ours always get one.
            usage = estimate_usage(request, written, calls)
        yield Finish(finish_reason, calls, usage)

    def _path(self, model: str) -> str:
        """The model API's path under the client's base URL; on Azure, the model's deployment's."""
        if not self._azure:
            return CHAT_COMPLETIONS
        path = self._paths.get(model)
        if path is None:
            deployment = quote(model, safe=PATH_SEGMENT_SAFE)
            if deployment in {".", ".."}:  # a dot segment would leave the deployments path
                raise LLMRejected(f"not an Azure OpenAI deployment name: {model!r}", status_code=400)
            path = self._paths[model] = f"/deployments/{deployment}{CHAT_COMPLETIONS}"
        return path

    async def close(self) -> None:
        await self._client.close()
        if self._credential is not None:
            await self._credential.close()


def _body(request: ChatRequest) -> bytes:
    """The request's JSON, serialised by orjson (the standard library's json, which the SDK uses,
    takes tens of microseconds for a long conversation); the typed fields win over any duplicate
    among the options passed through."""
    body: dict[str, Any] = {
        **request.options,
        "model": request.model,
        "messages": request.messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.tools:
        body["tools"] = request.tools
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body[request.max_tokens_field] = request.max_tokens
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        # What orjson refuses and json takes (an integer past 64 bits in a passed-through option).
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


async def _end_of_body(reads: AsyncIterator[bytes]) -> None:
    """Reads on after `[DONE]` to the body's end, which a server sends right after it: aiohttp
    pools a connection only when its response was read to the end, and one closed instead costs the
    next answer a new connection (and TLS handshake) before its request. A server that holds the
    body open longer loses the connection, as before; nothing after `[DONE]` is used."""
    try:
        async with asyncio.timeout(BODY_END_WAIT_S):
            async for _ in reads:
                pass
    except READ_ERRORS:
        pass


def _timed_out(exc: BaseException) -> bool:
    """Whether a failure of the HTTP stack was a timeout, decided by its first cause.

    The SDK's aiohttp transport reports every `aiohttp.ClientConnectionError` as httpx2's
    `ConnectTimeout`, a refused connect, a failed TLS handshake and a server hanging up before
    its headers included, so the SDK raises `APITimeoutError` for them; the aiohttp error under
    it says what happened (its timeouts are `TimeoutError`s).
    """
    causes: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(causes) < 10:
        causes.append(cause)
        cause = cause.__cause__
    for first in reversed(causes):
        if isinstance(first, TimeoutError):
            return True
        if isinstance(first, (aiohttp.ClientError, OSError)):
            return False
    return any(isinstance(one, (httpx2.TimeoutException, openai.APITimeoutError)) for one in causes)


def _translate(exc: openai.APIError, client_params: frozenset[str] = frozenset()) -> LLMError:
    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError included
        if _timed_out(exc):
            return LLMTimeout("the model did not answer in time")
        return LLMUnavailable(f"could not reach the model: {exc}: {_first_cause(exc)!r}")
    if isinstance(exc, openai.APIStatusError) and exc.status_code in CLIENT_ERROR_STATUSES:
        param = exc.param if isinstance(exc.param, str) else None
        if param and _top_level(param) in client_params:
            body = exc.body if isinstance(exc.body, dict) else {}
            message = body.get("message") if isinstance(body.get("message"), str) else exc.message
            code = exc.code if isinstance(exc.code, str) else None
            return LLMBadParameter(str(message), param=param, status_code=exc.status_code, code=code)
    if isinstance(exc, openai.APIStatusError):
        return LLMRejected(
            f"the model answered {exc.status_code}: {exc.message}", status_code=exc.status_code
        )
    return LLMUnavailable(f"the model's stream failed: {exc}")


def _first_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _top_level(param: str) -> str:
    """`tools[0].function.name` -> `tools`; `response_format.json_schema` -> `response_format`."""
    return param.split("[", 1)[0].split(".", 1)[0]


def create_chat_model(settings: Settings) -> OpenAIChatModel:
    """Azure OpenAI when AZURE_OPENAI_ENDPOINT is set, else OpenAI or a compatible endpoint."""
    # The gateway retries nothing itself mid-stream; one SDK retry covers a refused connect.
    common: dict[str, Any] = {
        "timeout": settings.llm_timeout_s,
        "max_retries": 1,
        "http_client": _http_client(settings),
    }
    if settings.uses_azure_openai:
        credential = None
        if settings.azure_openai_api_key:
            auth: dict[str, Any] = {"api_key": settings.azure_openai_api_key}
        else:
            from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider

            credential = DefaultAzureCredential()
            auth = {"azure_ad_token_provider": get_bearer_token_provider(credential, AZURE_SCOPE)}
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=settings.azure_openai_endpoint or "",
            api_version=settings.openai_api_version,
            **auth,
            **common,
        )
        return OpenAIChatModel(client, credential)
    return OpenAIChatModel(
        openai.AsyncOpenAI(
            api_key=settings.openai_api_key or SCRIPTED_API_KEY, base_url=settings.openai_base_url, **common
        )
    )


def _http_client(settings: Settings) -> httpx2.AsyncClient:
    """The SDK's own httpx2 client over aiohttp (`openai.DefaultAioHttpClient`), not over httpcore.

    aiohttp parses the responses in C on the gateway's event loop; httpcore, h11 and anyio parse
    them in Python (bench/README.md: "Upstream HTTP over aiohttp"). The SDK still builds and sends
    the request (auth, Azure deployment paths, retries, status errors). The timeout is the SDK's
    per request (connect, each read, the wait for a pooled connection), as before; closing the SDK
    client closes this one and its aiohttp session.
    """
    return openai.DefaultAioHttpClient(
        timeout=settings.llm_timeout_s,
        limits=httpx2.Limits(max_connections=MAX_UPSTREAM_CONNECTIONS, keepalive_expiry=UPSTREAM_KEEPALIVE_S),
    )
