"""The LLM adapter over the `openai` SDK: `AsyncOpenAI`, or `AsyncAzureOpenAI` when configured.

The only module of the gateway that imports the SDK.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp
import anyio
import httpx2
import openai

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


class OpenAIChatModel:
    def __init__(self, client: openai.AsyncOpenAI, credential: Any = None) -> None:
        self._client = client
        self._credential = credential

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatDelta, None]:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            kwargs["tools"] = request.tools
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.max_tokens is not None:
            kwargs[request.max_tokens_field] = request.max_tokens
        # The SDK takes these as keyword arguments; the typed ones above win over any duplicate.
        kwargs = {**request.options, **kwargs}
        assembler = ToolCallAssembler()
        finish_reason: str | None = None
        usage: dict[str, int] | None = None
        written: list[str] = []
        try:
            # The SDK makes the request (auth, Azure's deployment path, retries of the connect, status
            # errors) and hands over the raw HTTP response; its chunks are read here as plain JSON,
            # not built into SDK objects one by one (a large share of its CPU per token in the
            # profile), and the body, JSON already, is posted as it is: `chat.completions.create`
            # would first walk it through the SDK's type transforms, half a millisecond of a
            # stream's first token (bench/README.md).
            response = await self._client.post(
                CHAT_COMPLETIONS, body=kwargs, cast_to=httpx2.Response, stream=True, stream_cls=None
            )
            try:
                async for chunk in _sse_json(response.aiter_bytes()):
                    if chunk.get("error"):
                        raise LLMUnavailable(f"the model's stream failed: {chunk['error']}")
                    if chunk.get("usage"):
                        counts = chunk["usage"]
                        usage = {
                            "prompt_tokens": counts.get("prompt_tokens", 0),
                            "completion_tokens": counts.get("completion_tokens", 0),
                            "total_tokens": counts.get("total_tokens", 0),
                        }
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            written.append(delta["content"])
                            yield TextDelta(delta["content"])
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
            finally:
                # However the reading ends (the end, a cancel, an early exit) the HTTP response is
                # closed: the upstream sees the disconnect and stops generating.
                await response.aclose()
        except openai.APIError as exc:
            raise _translate(exc, request.client_params) from exc
        # Errors while reading the body (the SDK reports only those before the headers): the HTTP
        # client's, as its aiohttp transport maps them to httpx2's, or aiohttp's own where the
        # transport leaves one unmapped; TLS, and the socket ending mid-read.
        except (
            httpx2.RequestError,
            aiohttp.ClientError,
            TimeoutError,
            ssl.SSLError,
            anyio.EndOfStream,
        ) as exc:
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

    async def close(self) -> None:
        await self._client.close()
        if self._credential is not None:
            await self._credential.close()


async def _sse_json(body: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """The JSON of each server-sent event's data until `[DONE]`, from the body's bytes as they come."""
    events = _EventData()
    async for piece in body:
        for payload in events.feed(piece):
            if payload == b"[DONE]":
                return
            yield _json(payload)
    for payload in events.end():
        if payload == b"[DONE]":
            return
        yield _json(payload)


class _EventData:
    """Splits the lines of each read at once (LF, CRLF or CR; `bytes.splitlines`), not one await per
    line as httpx2's `aiter_lines` does: a read's last line waits for the next read when unfinished
    or ending in CR (maybe half a CRLF). The data lines of one event are joined by a newline."""

    def __init__(self) -> None:
        self._rest = b""
        self._data: list[bytes] = []

    def feed(self, piece: bytes) -> list[bytes]:
        lines = (self._rest + piece if self._rest else piece).splitlines(keepends=True)
        self._rest = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        return self._events(lines)

    def end(self) -> list[bytes]:
        """The events the body's end completes (its last line may end in CR); an event left open
        (data without its blank line, other than `[DONE]`) is the stream failing."""
        payloads = self._events([self._rest] if self._rest else [])
        self._rest = b""
        if self._data and self._data != [b"[DONE]"]:
            raise LLMUnavailable("the model's stream ended inside an event")
        return payloads

    def _events(self, lines: list[bytes]) -> list[bytes]:
        payloads = []
        for line in lines:
            line = line.rstrip(b"\r\n")
            if line.startswith(b"data:"):
                self._data.append(line[5:].lstrip(b" "))
            elif not line and self._data:
                payloads.append(b"\n".join(self._data))
                self._data.clear()
        return payloads


def _json(payload: bytes) -> dict[str, Any]:
    try:
        return json.loads(payload)  # type: ignore[no-any-return]
    except ValueError as exc:
        raise LLMUnavailable(f"the model sent a chunk that is not JSON: {payload[:100]!r}") from exc


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
