"""The LLM adapter over the `openai` SDK: `AsyncOpenAI`, or `AsyncAzureOpenAI` when configured.

The only module of the gateway that imports the SDK.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any

import openai

from streaming_gateway.llm.port import (
    ChatDelta,
    ChatRequest,
    Finish,
    LLMError,
    LLMRejected,
    LLMTimeout,
    LLMUnavailable,
    TextDelta,
    ToolCallAssembler,
)
from streaming_gateway.settings import Settings

log = logging.getLogger(__name__)

#: The scripted upstream needs no key, but the SDK refuses to start without one.
SCRIPTED_API_KEY = "scripted-local"
AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"


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
            kwargs["max_tokens"] = request.max_tokens
        try:
            stream = await self._client.chat.completions.create(**kwargs)
        except openai.APIError as exc:
            raise _translate(exc) from exc
        assembler = ToolCallAssembler()
        finish_reason: str | None = None
        usage: dict[str, int] | None = None
        try:
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = {
                        "prompt_tokens": chunk.usage.prompt_tokens,
                        "completion_tokens": chunk.usage.completion_tokens,
                        "total_tokens": chunk.usage.total_tokens,
                    }
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta is not None and delta.content:
                        yield TextDelta(delta.content)
                    for call in (delta.tool_calls or []) if delta is not None else []:
                        function = call.function
                        assembler.add(
                            call.index,
                            call.id,
                            function.name if function else None,
                            function.arguments if function else None,
                        )
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
        except openai.APIError as exc:
            raise _translate(exc) from exc
        finally:
            # On cancellation or an early exit this closes the HTTP response: the upstream sees
            # the disconnect and stops generating.
            await stream.close()
        if finish_reason is None:
            raise LLMUnavailable("the model's stream ended without a finish reason")
        yield Finish(finish_reason, assembler.calls(), usage)

    async def close(self) -> None:
        await self._client.close()
        if self._credential is not None:
            await self._credential.close()


def _translate(exc: openai.APIError) -> LLMError:
    if isinstance(exc, openai.APITimeoutError):
        return LLMTimeout("the model did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        return LLMUnavailable(f"could not reach the model: {exc}")
    if isinstance(exc, openai.APIStatusError):
        return LLMRejected(
            f"the model answered {exc.status_code}: {exc.message}", status_code=exc.status_code
        )
    return LLMUnavailable(f"the model's stream failed: {exc}")


def create_chat_model(settings: Settings) -> OpenAIChatModel:
    """Azure OpenAI when AZURE_OPENAI_ENDPOINT is set, else OpenAI or a compatible endpoint."""
    # The gateway retries nothing itself mid-stream; one SDK retry covers a refused connect.
    common: dict[str, Any] = {"timeout": settings.llm_timeout_s, "max_retries": 1}
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
