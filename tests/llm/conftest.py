"""Every test of this folder runs on asyncio's event loop and on uvloop's, the one
`python -m streaming_gateway` serves on (its TLS, socket errors and timeouts are uvloop's own);
the raw upstream servers and the models made from settings, closed after each test."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import pytest
import uvloop

from streaming_gateway.llm.openai_adapter import OpenAIChatModel, create_chat_model
from streaming_gateway.settings import Settings
from tests.llm.servers import BASE_ENV, Handler, RawUpstream


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[..., Awaitable[RawUpstream]]]:
    started: list[RawUpstream] = []

    async def start(handler: Handler, tls: ssl.SSLContext | None = None) -> RawUpstream:
        server = RawUpstream(handler, tls)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


@pytest.fixture
async def models() -> AsyncIterator[Callable[..., OpenAIChatModel]]:
    """Models made by the gateway's own factory from settings; each closed after the test."""
    made: list[OpenAIChatModel] = []

    def make(base_url: str, **env: str) -> OpenAIChatModel:
        settings = Settings.from_env(
            {
                **BASE_ENV,
                "OPENAI_BASE_URL": base_url,
                "OPENAI_API_KEY": "test",
                "LLM_TIMEOUT_SECONDS": "1",
                **env,
            }
        )
        model = create_chat_model(settings)
        made.append(model)
        return model

    yield make
    for model in made:
        await model.close()
